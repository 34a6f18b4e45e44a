# Two commands matter: `make demo` and `make test`. Both set up .venv first (Python 3.11+, PyPI only).
.PHONY: setup demo test lint fixtures bench clean

setup:
	sh scripts/dev.sh setup

demo:
	sh scripts/dev.sh demo

test:
	sh scripts/dev.sh test

lint: setup
	.venv/bin/ruff check src tests bench scripts
	.venv/bin/mypy

fixtures: setup
	.venv/bin/python tests/data.py

bench: setup
	.venv/bin/python bench/locate_latency.py

clean:
	rm -rf .venv .cache .pytest_cache .mypy_cache .ruff_cache
