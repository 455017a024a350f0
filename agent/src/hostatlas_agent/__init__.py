"""The HostAtlas agent. Public surface: ``__version__`` and the ``hostatlas-agent`` command."""

__version__ = "0.1.0"
