"""What every queue, buffer and background job shares: a quarantine for items that keep failing, and health.

Core: features import from here, never the other way round. A feature registers how to replay its own
items (``quarantine.Replayers``) from the composition layer (``jobs.py``).
"""
