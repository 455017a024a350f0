"""HostAtlas: self-hostable, API-first server monitoring."""

__version__ = "0.1.0"
