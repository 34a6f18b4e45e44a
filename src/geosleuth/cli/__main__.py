"""``python -m geosleuth.cli``: the same as the ``geosleuth`` command."""

from geosleuth.cli import main

main()
