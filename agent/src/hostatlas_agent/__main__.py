"""``python -m hostatlas_agent``: the same as the ``hostatlas-agent`` command."""

from __future__ import annotations

import sys

from hostatlas_agent.cli import main

sys.exit(main())
