"""Outgoing webhooks: subscriptions, signed deliveries, retries and the delivery log."""
