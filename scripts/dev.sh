#!/bin/sh
# Set up the development environment and run the demo or the tests.
#   sh scripts/dev.sh setup | demo | test
# Needs only Python 3.11+ and the PyPI registry. `make demo` / `make test` call this script.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=${VENV:-.venv}
STAMP="$VENV/.geosleuth-setup"

setup() {
    if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
        return 0
    fi
    echo "==> creating $VENV with $($PY --version)"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # torch first, pinned: this version's CPU wheel is what pip finds here; an unpinned torch pulls
    # gigabytes of CUDA. Elsewhere add: --index-url https://download.pytorch.org/whl/cpu
    echo "==> installing torch (CPU)"
    "$VENV/bin/python" -m pip install --quiet torch==2.13.0
    echo "==> installing geosleuth with OCR, language ID, retrieval and dev tools"
    "$VENV/bin/python" -m pip install --quiet -e '.[all,dev]'
    # GeoCLIP's trained location encoder and 100K GPS gallery ship in its wheel. Its declared
    # dependencies would replace torch and add a broken torchvision, so: no deps.
    "$VENV/bin/python" -m pip install --quiet --no-deps geoclip==1.3.0
    # The offline gazetteer and land/ocean grid, built now so the first locate does not wait for them.
    "$VENV/bin/geosleuth" prepare
    touch "$STAMP"
}

case "${1:-}" in
    setup)
        setup
        ;;
    demo)
        setup
        "$VENV/bin/geosleuth" locate examples/
        ;;
    test)
        setup
        "$VENV/bin/ruff" check src tests bench scripts
        "$VENV/bin/mypy"
        # pytest exits 5 when it collects no tests: that fails the run, as it should.
        "$VENV/bin/python" -m pytest
        ;;
    *)
        echo "usage: sh scripts/dev.sh setup|demo|test" >&2
        exit 2
        ;;
esac
