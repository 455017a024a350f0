"""``hostatlas-agent``: enrol this host, run the agent, show its status, install it as a systemd service."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hostatlas_agent import __version__, host
from hostatlas_agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load
from hostatlas_agent.state import Credentials, StateDir
from hostatlas_agent.transport import Outcome, Platform

log = logging.getLogger("hostatlas_agent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostatlas-agent", description="Push this host's telemetry to HostAtlas.")
    parser.add_argument("--version", action="version", version=f"hostatlas-agent {__version__}")
    parser.add_argument("--config", type=Path, help="config file (default /etc/hostatlas/agent.toml)")
    sub = parser.add_subparsers(dest="command")
    enrol = sub.add_parser("enrol", help="Register this host with a platform and keep its agent token")
    enrol.add_argument("--url", required=True, help="the platform's address, e.g. https://hostatlas.example.com")
    enrol.add_argument("--key", required=True, help="an API key with the agent:register scope (used once)")
    sub.add_parser("run", help="Run the agent in the foreground (what the systemd unit starts)")
    sub.add_parser("status", help="What the agent sends, when it last succeeded, the spool's size")
    install = sub.add_parser("install-service", help="Write and enable the systemd unit")
    install.add_argument("--no-user", action="store_true", help="run as root instead of a hostatlas-agent user")
    uninstall = sub.add_parser("uninstall-service", help="Disable and remove the systemd unit (keeps the state)")
    for command in (install, uninstall):
        command.add_argument("--unit-dir", type=Path, default=Path("/etc/systemd/system"), help=argparse.SUPPRESS)
        command.add_argument("--no-systemctl", action="store_true",
                             help="only write/remove the unit; print the systemctl commands instead of running them")
    sub.add_parser("replay", help="Put the batches the platform refused back in the spool")
    sub.add_parser("info", help="Print what the agent would report about this host")
    for command in sub.choices.values():  # `hostatlas-agent run --config X` reads as well as the global form
        command.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"hostatlas-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):  # a line per request would drown what the agent itself says
        logging.getLogger(chatty).setLevel(logging.WARNING)
    commands = {"enrol": _enrol, "run": _run, "status": _status, "install-service": _install,
                "uninstall-service": _uninstall, "replay": _replay, "info": _info}
    return int(commands[args.command](config, args))


def _enrol(config: AgentConfig, args: argparse.Namespace) -> int:
    state = StateDir(config.state_dir)
    try:
        state.ensure()
    except OSError as exc:
        print(f"hostatlas-agent: cannot use the state directory {state.path}: {exc}", file=sys.stderr)
        return 1
    facts = host.facts(state.path)
    platform = Platform(args.url, None, timeout=config.request_timeout, ca_file=config.ca_file)
    try:
        answer = platform.register(args.key, facts)
    finally:
        platform.close()
    if answer.outcome is not Outcome.DELIVERED or not isinstance(answer.body, dict):
        print(f"hostatlas-agent: enrolment failed: HTTP {answer.status or '-'} {answer.detail}", file=sys.stderr)
        return 1
    state.save_credentials(Credentials(url=platform.url, server_id=int(answer.body["server_id"]),
                                       agent_token=str(answer.body["agent_token"]),
                                       machine_id=str(facts["machine_id"])))
    print(f"enrolled {facts['hostname']} as server {answer.body['server_id']} at {platform.url}; "
          f"credentials in {state.credentials_path}")
    return 0


def _credentials(config: AgentConfig) -> Credentials | None:
    try:
        credentials = StateDir(config.state_dir).load_credentials()
    except ValueError as exc:
        print(f"hostatlas-agent: {exc}", file=sys.stderr)
        return None
    if credentials is None:
        print(f"hostatlas-agent: not enrolled (no {StateDir(config.state_dir).credentials_path}); run "
              "`hostatlas-agent enrol --url URL --key KEY` first", file=sys.stderr)
    return credentials


def _run(config: AgentConfig, args: argparse.Namespace) -> int:
    from hostatlas_agent.runner import Runner

    credentials = _credentials(config)
    if credentials is None:
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        # From another thread: the handler may run while the main thread is inside stop.wait(), holding the
        # event's non-reentrant lock, and stop.set() here would then wait for it forever.
        threading.Thread(target=stop.set, daemon=True).start()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    Runner(config, credentials).run(stop)
    return 0


def _status(config: AgentConfig, args: argparse.Namespace) -> int:
    from hostatlas_agent.spool import Spool

    state = StateDir(config.state_dir)
    credentials = _credentials(config)
    saved = state.load_status()
    spool = Spool(state.spool_path, max_bytes=config.spool_max_bytes, max_age=config.spool_max_age).stats()
    now = time.time()
    lines = [f"hostatlas-agent {__version__}"]
    if credentials:
        lines.append(f"platform:   {credentials.url} (server {credentials.server_id})")
    if saved:
        alive = now - float(saved.get("saved_at", 0)) < 60
        running = f"yes, pid {saved.get('pid')}" if alive else f"no (last seen {_ago(now, saved.get('saved_at'))})"
        lines.append(f"running:    {running}")
        lines.append(f"sends:      metrics every {saved.get('metrics_interval')} s, check-ins every "
                     f"{saved.get('checkin_interval')} s; features "
                     + ", ".join(k for k, v in (saved.get("features") or {}).items() if v))
        lines.append(f"logs:       {len(saved.get('tailed_files') or [])} files tailed")
        lines.append(f"discovered: {json.dumps(saved.get('discovered') or {})}")
        for endpoint, at in sorted((saved.get("last_success") or {}).items()):
            lines.append(f"last {endpoint + ':':<12}{_ago(now, at)}")
        error = saved.get("last_error")
        if error:
            lines.append(f"last error: {error.get('endpoint')} {_ago(now, error.get('at'))}: "
                         f"{error.get('status') or 'no answer'} {error.get('detail')}")
    else:
        lines.append("running:    never ran (no status yet)")
    lines.append(f"spool:      {spool['batches']} batches, {spool['bytes']} bytes, oldest {spool['oldest_age_s']} s; "
                 f"{spool['rejected']} set aside")
    print("\n".join(lines))
    return 0 if credentials else 2


def _ago(now: float, at: Any) -> str:
    if not isinstance(at, (int, float)):
        return "never"
    return f"{max(0.0, now - at):.0f} s ago"


def _install(config: AgentConfig, args: argparse.Namespace) -> int:
    from hostatlas_agent import systemd

    config_path = (args.config or DEFAULT_CONFIG_PATH).resolve()
    result = systemd.install(unit_dir=args.unit_dir, executable=_own_executable(), config_path=config_path,
                             create_user=not args.no_user, run_systemctl=not args.no_systemctl,
                             state_dir=config.state_dir)
    print(result.report())
    return 0 if result.ok else 1


def _own_executable() -> str:
    """The command that starts this very agent: the installed script (pipx puts it on PATH), else this Python."""
    script = Path(sys.argv[0])
    if script.name == "hostatlas-agent" and script.exists():
        return str(script.resolve())
    found = shutil.which("hostatlas-agent")
    return found or f"{shlex.quote(sys.executable)} -m hostatlas_agent"


def _uninstall(config: AgentConfig, args: argparse.Namespace) -> int:
    from hostatlas_agent import systemd

    result = systemd.uninstall(unit_dir=args.unit_dir, run_systemctl=not args.no_systemctl,
                               state_dir=config.state_dir)
    print(result.report())
    return 0 if result.ok else 1


def _replay(config: AgentConfig, args: argparse.Namespace) -> int:
    from hostatlas_agent.spool import Spool

    spool = Spool(StateDir(config.state_dir).spool_path, max_bytes=config.spool_max_bytes,
                  max_age=config.spool_max_age)
    for name, reason in spool.rejected():
        print(f"{name}: {reason}")
    print(f"{spool.replay_rejected()} batches back in the spool")
    return 0


def _info(config: AgentConfig, args: argparse.Namespace) -> int:
    for key, value in host.facts(None).items():
        print(f"{key}: {value}")
    return 0
