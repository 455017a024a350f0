"""What the agent costs the host it watches, and what one agent costs the platform.

A real `hostatlas serve` (SQLite) on loopback; first it idles alone for --baseline seconds (its own CPU, the
reference), then one real agent, enrolled like a user would, runs at its DEFAULT intervals for --duration
seconds (300 = the issue's 5 minutes) doing everything it does on this machine: metrics, check-ins, config
pulls, discovery of this host's processes and ports, log tailing, the crash watch. Sampled every 5 s with
psutil: the agent's CPU (its children included: version commands during discovery) and RSS, and the serve
process's CPU. Targets: under 1% of one core on average, under 40 MB RSS.

    uv run python bench/agent_overhead.py                 # 60 s baseline + 5 minutes
    uv run python bench/agent_overhead.py --duration 60   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from _harness import serve


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds the agent runs (default 300)")
    parser.add_argument("--baseline", type=float, default=60.0, help="seconds serve idles alone first")
    parser.add_argument("--agent-python", default=sys.executable,
                        help="the Python the agent runs on: a venv with only the agent installed, as pipx makes "
                             "it, shows what a host pays (this venv also holds the platform's libraries)")
    args = parser.parse_args()
    with serve("sqlite", extra_env={"HOSTATLAS_LOCAL_AGENT": "false"}) as target, \
            tempfile.TemporaryDirectory(prefix="hostatlas-agent-bench-") as workdir:
        platform = psutil.Process(target.pid)
        time.sleep(5)  # past start-up
        before = cpu_seconds(platform)
        time.sleep(args.baseline)
        idle_rate = (cpu_seconds(platform) - before) / args.baseline

        config = Path(workdir) / "agent.toml"
        config.write_text(f'url = "{target.base_url}"\nstate_dir = "{Path(workdir) / "state"}"\n')
        agent_cmd = [args.agent_python, "-m", "hostatlas_agent", "--config", str(config)]
        subprocess.run([*agent_cmd, "enrol", "--url", target.base_url, "--key", target.api_key], check=True,
                       capture_output=True, env={**os.environ, "HOSTATLAS_AGENT_LOG_LEVEL": "WARNING"})
        log = open(Path(workdir) / "agent.log", "w")  # noqa: SIM115 - closed below
        process = subprocess.Popen([*agent_cmd, "run"], stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HOSTATLAS_AGENT_LOG_LEVEL": "WARNING"})
        agent = psutil.Process(process.pid)
        started = time.monotonic()
        platform_start = cpu_seconds(platform)
        rss: list[float] = []
        minute_cpu: list[float] = []
        last_cpu, last_t = 0.0, started
        try:
            while time.monotonic() - started < args.duration:
                time.sleep(5)
                rss.append(agent.memory_info().rss / 2**20)
                if time.monotonic() - last_t >= 60:
                    now_cpu = cpu_seconds(agent)
                    minute_cpu.append(100 * (now_cpu - last_cpu) / (time.monotonic() - last_t))
                    last_cpu, last_t = now_cpu, time.monotonic()
            elapsed = time.monotonic() - started
            agent_cpu = cpu_seconds(agent)
            platform_cpu = cpu_seconds(platform) - platform_start
        finally:
            process.terminate()
            process.wait(timeout=20)
            log.close()
        status = subprocess.run([*agent_cmd, "status"], capture_output=True, text=True).stdout
        print(f"agent at default intervals for {elapsed:.0f} s against a real serve (SQLite), this machine "
              f"({psutil.cpu_count()} cores)")
        print(f"  agent CPU: {100 * agent_cpu / elapsed:.2f}% of one core on average "
              f"(per minute: {', '.join(f'{c:.2f}%' for c in minute_cpu)}); target < 1%")
        print(f"  agent RSS: median {statistics.median(rss):.1f} MB, max {max(rss):.1f} MB; target < 40 MB")
        extra = platform_cpu - idle_rate * elapsed
        print(f"  platform: idle {100 * idle_rate:.2f}% of a core; with the agent {100 * platform_cpu / elapsed:.2f}%;"
              f" one agent's cost {100 * extra / elapsed:.3f}% of a core")
        print("  agent status at the end:\n    " + status.strip().replace("\n", "\n    "))


if __name__ == "__main__":
    main()
