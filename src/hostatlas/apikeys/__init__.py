"""API keys: scoped, hashed, expiring and rotatable credentials for the REST API."""
