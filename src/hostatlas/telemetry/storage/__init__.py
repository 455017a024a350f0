"""Telemetry's store: the contract every backend keeps (``contract``, ``series``), the embedded and ClickHouse
backends, opening the one the settings name (``stores``) and the worker's retention job. Imports nothing
else of telemetry: ``ingest`` and ``query`` both build on it.
"""
