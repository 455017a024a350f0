"""The platform stopped for 2 minutes while an agent runs (short intervals: metrics every second, logs every
0.2 s, an application writing five numbered lines a second) and started again: every line and every metric
second produced meanwhile must arrive, in order, none twice. The same scenario as
tests/test_agent_outage.py, which runs it with a 15 s outage.

    uv run python bench/agent_outage.py                # a 120 s outage
    uv run python bench/agent_outage.py --outage 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.*

from tests.test_agent_outage import run_outage  # noqa: E402 - after the path is set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the platform stays down")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostatlas-outage-") as workdir:
        figures = run_outage(Path(workdir), args.outage)
    print(f"platform down {figures['outage_s']:.0f} s while the agent ran (checked: all arrived, none twice):")
    print(f"  log lines written {figures['lines_written']:.0f}, arrived {figures['lines']:.0f}")
    print(f"  cpu.percent seconds around the outage: {figures['metric_seconds']:.0f}, each once, "
          f"largest gap {figures['largest_gap_s']:.0f} s")
    print(f"  spool at the end of the outage: {figures['spooled_batches']:.0f} batches, "
          f"{figures['spooled_bytes'] / 1024:.0f} KiB; drained and checked {figures['drained_in_s']} s after restart")


if __name__ == "__main__":
    main()
