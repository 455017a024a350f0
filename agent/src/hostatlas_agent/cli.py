"""``hostatlas-agent``: the command run on each monitored host."""

from __future__ import annotations

import argparse
import platform

from hostatlas_agent import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostatlas-agent", description="Push this host's telemetry to HostAtlas.")
    parser.add_argument("--version", action="version", version=f"hostatlas-agent {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="Print what the agent would report about this host")
    return parser


def host_facts() -> dict[str, object]:
    import psutil

    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "cpu_cores": psutil.cpu_count() or 0,
        "ram_total_mb": psutil.virtual_memory().total // (1024 * 1024),
        "agent_version": __version__,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        for key, value in host_facts().items():
            print(f"{key}: {value}")
        return 0
    build_parser().print_help()
    return 0
