"""The event feed: one row per state change, written in the transaction that made the change.

Later features (webhooks, incidents) consume it as a transactional outbox.
"""
