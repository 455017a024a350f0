"""Remote agent configuration: team defaults, per-server overrides, served to agents with an ETag."""
