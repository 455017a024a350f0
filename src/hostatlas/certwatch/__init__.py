"""SSL expiry: discovered certificates and domains crossing their expiry thresholds (``ssl.expiring``, incidents)."""
