# The two commands a new machine needs: `make serve` and `make test` (see README.md).
.PHONY: serve test lint deps bench

deps:
	@scripts/ensure-uv
	@uv sync --frozen --quiet

# Runs the platform on the embedded default: SQLite under ./hostatlas-data, nothing else needed.
serve: deps
	uv run --frozen hostatlas serve $(ARGS)

lint: deps
	uv run --frozen ruff check .
	uv run --frozen mypy

# The whole suite: lint, types, then the tests on SQLite and PostgreSQL (+ Redis). Suites whose
# service is missing are skipped with a message, except under CI=true where they fail the run.
test: lint
	uv run --frozen pytest $(ARGS)
