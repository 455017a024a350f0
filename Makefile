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
	uv run --frozen lint-imports --no-cache

# The whole suite: lint, types, then the tests on SQLite and PostgreSQL (+ Redis, ClickHouse), in four pytest-xdist
# processes (HOSTATLAS_TEST_WORKERS; most tests wait on real servers and processes, so four beat one even on two
# cores), a test file per process (--dist loadfile): a module's fixtures, such as a running serve, are started once; the
# modules marked long_running go first, longest first (tests/conftest.py), so none is left alone at the end. Suites whose
# service is missing are skipped with a message, except under CI=true where they fail the run.
# ClickHouse is installed and started by scripts/clickhouse unless HOSTATLAS_TEST_CLICKHOUSE_URL names one; the
# two-shard cluster (+ ZooKeeper) by scripts/clickhouse-cluster unless HOSTATLAS_TEST_CLICKHOUSE_CLUSTER_URL does.
test: lint
	@url="$${HOSTATLAS_TEST_CLICKHOUSE_URL:-}"; \
	if [ -z "$$url" ]; then \
	  if out="$$(scripts/clickhouse start)"; then \
	    url="$$(printf '%s\n' "$$out" | tail -n 1)"; \
	  elif [ "$${CI:-}" = "true" ]; then \
	    echo "make test: scripts/clickhouse start failed, and CI needs ClickHouse" >&2; exit 1; \
	  else \
	    echo "make test: WARNING: scripts/clickhouse start failed; the ClickHouse tests will be skipped" >&2; \
	  fi; \
	fi; \
	cluster_url="$${HOSTATLAS_TEST_CLICKHOUSE_CLUSTER_URL:-}"; \
	if [ -z "$$cluster_url" ]; then \
	  if out="$$(scripts/clickhouse-cluster start)"; then \
	    cluster_url="$$(printf '%s\n' "$$out" | tail -n 1)"; \
	  elif [ "$${CI:-}" = "true" ]; then \
	    echo "make test: scripts/clickhouse-cluster start failed, and CI needs the ClickHouse cluster" >&2; exit 1; \
	  else \
	    echo "make test: WARNING: scripts/clickhouse-cluster start failed; the cluster tests will be skipped" >&2; \
	  fi; \
	fi; \
	HOSTATLAS_TEST_CLICKHOUSE_URL="$$url" HOSTATLAS_TEST_CLICKHOUSE_CLUSTER_URL="$$cluster_url" \
	  uv run --frozen pytest -n "$${HOSTATLAS_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder $(ARGS)
