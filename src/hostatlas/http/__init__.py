"""HTTP conventions shared by every endpoint: errors, auth, pagination, rate limits, body guards."""
