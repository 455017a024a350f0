"""Teams: the tenant every resource belongs to."""
