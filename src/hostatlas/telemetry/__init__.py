"""Telemetry: metric points and log lines from agents, kept in the embedded store or ClickHouse.

Three parts (docs/telemetry.md, "Where the code is"): ``ingest`` (judge, spool, store behind the answer),
``storage`` (the store contract, its backends, retention) and ``query`` (reads); ``runtime`` holds what
one serving process runs, ``routes`` and ``schemas`` the REST API's side.
"""
