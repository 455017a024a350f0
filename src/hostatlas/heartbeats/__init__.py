"""Heartbeats: cron and job monitoring through ping URLs (docs/heartbeats.md)."""
