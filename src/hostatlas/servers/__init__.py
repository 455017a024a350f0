"""Servers: the hosts agents enrol, their status, tags and agent tokens."""
