"""Telemetry: metric points and log lines from agents, kept in the embedded store or ClickHouse."""
