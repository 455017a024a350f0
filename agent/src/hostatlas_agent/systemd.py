"""Everything the agent asks of systemd: the state of a unit (for the crash watcher) and the agent's own
unit, with its install and uninstall.

Nothing here requires systemd: without it (containers, other init systems) the queries answer nothing and
install writes the unit but says which commands to run instead of running them."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hostatlas_agent.config import DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR

log = logging.getLogger("hostatlas_agent.systemd")

UNIT_NAME = "hostatlas-agent.service"
AGENT_USER = "hostatlas-agent"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
# adm reads /var/log/*; systemd-journal reads the journal. Never docker: its socket is root-equivalent.
READER_GROUPS = ("adm", "systemd-journal")
SHOW_PROPERTIES = ("ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainCode", "MainPID")
QUERY_TIMEOUT = 3.0
SYSTEMCTL_TIMEOUT = 60.0  # enable --now waits for the start job


def systemd_running() -> bool:
    """True when systemd is PID 1 (sd_booted()'s own test), so systemctl can answer."""
    return os.path.isdir("/run/systemd/system")


# --- unit state, for the crash watcher -------------------------------------------------------------------

class UnitStatus(NamedTuple):
    """``state`` is ``up`` (running or starting), ``failed`` (crashed, or waiting for systemd's restart after
    a crash), ``stopped`` (stopped on purpose: ``systemctl stop`` ends with Result=success, or the unit is
    gone) or ``down`` (not running for a reason systemd does not call a failure)."""

    state: str
    main_pid: int | None
    properties: dict[str, str]


def parse_show(text: str) -> list[dict[str, str]]:
    """``systemctl show`` output for one or more units: ``Key=Value`` lines, one block per unit in the order
    the units were named, blocks separated by an empty line."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key.strip()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def unit_status(properties: dict[str, str]) -> UnitStatus:
    """What one ``systemctl show`` block means for the crash watcher."""
    active = properties.get("ActiveState", "")
    sub = properties.get("SubState", "")
    result = properties.get("Result", "")
    try:
        pid: int | None = int(properties.get("MainPID", "0")) or None
    except ValueError:
        pid = None
    if properties.get("LoadState") == "not-found":
        state = "stopped"  # uninstalled: nothing crashed
    elif active in ("active", "reloading") or (active == "activating" and sub != "auto-restart"):
        state = "up"
    elif active == "failed" or (result and result != "success"):
        state = "failed"  # includes activating/auto-restart: it died and systemd is about to restart it
    elif active in ("inactive", "deactivating") and result == "success":
        state = "stopped"
    else:
        state = "down"
    return UnitStatus(state, pid, properties)


def query_units(units: Sequence[str]) -> dict[str, UnitStatus]:
    """The state of each unit, in one ``systemctl show`` call. Empty when systemd cannot be asked."""
    if not units or not systemd_running():
        return {}
    properties = ",".join(("LoadState",) + SHOW_PROPERTIES)
    try:
        done = subprocess.run(["systemctl", "show", "-p", properties, "--", *units], capture_output=True,
                              text=True, timeout=QUERY_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("systemctl show %s: %s", " ".join(units), exc)
        return {}
    blocks = parse_show(done.stdout)
    if done.returncode != 0 or len(blocks) != len(units):
        log.warning("systemctl show %s: exit %s, %s", " ".join(units), done.returncode, done.stderr.strip()[:200])
        return {}
    return {unit: unit_status(block) for unit, block in zip(units, blocks)}


# --- the agent's own unit ------------------------------------------------------------------------------

def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _quote(arg: str) -> str:
    """One ExecStart= argument: systemd expands % specifiers and $ variables and splits on spaces."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c in escaped for c in " \t\"'\\"):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def unit_text(executable: str, config_path: str, user: str = AGENT_USER) -> str:
    """The agent's hardened unit. Runs as ``user`` when that account exists, else as root."""
    lines = [
        "# Written by `hostatlas-agent install`; re-running it rewrites this file.",
        "[Unit]",
        "Description=HostAtlas agent (metrics, logs, discovery and crash reports)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        # `executable` may be a command with arguments ("/usr/bin/python3 -m hostatlas_agent"): quote each.
        f"ExecStart={' '.join(_quote(part) for part in shlex.split(executable))} run --config {_quote(config_path)}",
        "Restart=always",
        "RestartSec=5",
    ]
    if _user_exists(user):
        lines.append(f"User={user}")
        if user != "root":
            groups = [g for g in READER_GROUPS if _group_exists(g)]
            if groups:
                lines.append("# To read /var/log and the journal without being root.")
                lines.append("SupplementaryGroups=" + " ".join(groups))
    else:
        lines.append(f"# No {user!r} account on this host, so the agent runs as root (install creates it).")
    lines += [
        "StateDirectory=hostatlas-agent",
        "StateDirectoryMode=0750",
        "# The agent only reads the host: the whole file system is read-only for it but its state directory.",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        f"ReadWritePaths={DEFAULT_STATE_DIR}",
        "PrivateTmp=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "# Not ProtectKernelLogs=: crash reports read OOM-killer lines from /dev/kmsg.",
        "# A monitoring agent must never be what hurts the host: a leak or a runaway loop is capped here",
        "# (the kernel kills it at MemoryMax and systemd restarts it) and it yields the CPU to real work.",
        "MemoryMax=128M",
        "CPUQuota=20%",
        "Nice=10",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


@dataclass
class InstallResult:
    """What install/uninstall did, and what is left for the operator to run."""

    unit_path: Path
    done: list[str] = field(default_factory=list)
    to_run: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def report(self) -> str:
        lines = [f"done: {item}" for item in self.done]
        lines += [f"run: {command}" for command in self.to_run]
        lines += [f"error: {error}" for error in self.errors]
        return "\n".join(lines)


def default_executable() -> str:
    """The ``hostatlas-agent`` command: on PATH, else beside this Python (a virtualenv install)."""
    found = shutil.which("hostatlas-agent")
    if found:
        return str(Path(found).resolve())
    return str(Path(sys.executable).parent / "hostatlas-agent")


def _run(command: list[str], result: InstallResult, timeout: float = SYSTEMCTL_TIMEOUT) -> bool:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        result.errors.append(f"{' '.join(command)}: {exc}")
        return False
    if done.returncode != 0:
        result.errors.append(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()[:500]}")
        return False
    result.done.append(" ".join(command))
    return True


def _write_atomically(path: Path, text: str) -> None:
    """Readers (systemd) see the old unit or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _chown_tree(root: Path, user: str) -> None:
    """The state directory, so files a root-run `register` wrote (credentials 0600) stay readable."""
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def _ensure_user(result: InstallResult) -> None:
    if not _user_exists(AGENT_USER):
        if _run(["useradd", "--system", "--no-create-home", "--home-dir", str(DEFAULT_STATE_DIR),
                 "--shell", "/usr/sbin/nologin", AGENT_USER], result):
            result.done[-1] = f"created system user {AGENT_USER}"
        else:
            return
    in_adm = not _group_exists("adm") or AGENT_USER in grp.getgrnam("adm").gr_mem
    if not in_adm and _run(["usermod", "--append", "--groups", "adm", AGENT_USER], result):
        result.done[-1] = f"added {AGENT_USER} to group adm"


def install(unit_dir: Path = DEFAULT_UNIT_DIR, executable: str | None = None,
            config_path: Path = DEFAULT_CONFIG_PATH, create_user: bool = True, run_systemctl: bool = True,
            state_dir: Path = DEFAULT_STATE_DIR) -> InstallResult:
    """Install (or refresh) the agent's unit and start it. Safe to run again."""
    unit_path = Path(unit_dir) / UNIT_NAME
    result = InstallResult(unit_path)
    if create_user:
        _ensure_user(result)
    try:
        state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        if _user_exists(AGENT_USER):
            _chown_tree(state_dir, AGENT_USER)
            result.done.append(f"{state_dir} belongs to {AGENT_USER}")
    except OSError as exc:
        result.errors.append(f"state directory {state_dir}: {exc}")
    text = unit_text(executable or default_executable(), str(config_path), AGENT_USER)
    existed = unit_path.exists()
    try:
        if existed and unit_path.read_text(encoding="utf-8") == text:
            result.done.append(f"{unit_path} is up to date")
        else:
            _write_atomically(unit_path, text)
            result.done.append(f"wrote {unit_path}")
    except OSError as exc:
        result.errors.append(f"writing {unit_path}: {exc}")
        return result
    commands = [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]]
    if existed:  # a re-install (new version, new unit): the running agent must pick it up
        commands.append(["systemctl", "restart", UNIT_NAME])
    _systemctl(commands, run_systemctl, result)
    return result


def uninstall(unit_dir: Path = DEFAULT_UNIT_DIR, run_systemctl: bool = True,
              state_dir: Path = DEFAULT_STATE_DIR) -> InstallResult:
    """Stop and remove the unit. The state directory (credentials, unsent data) and the user stay."""
    unit_path = Path(unit_dir) / UNIT_NAME
    result = InstallResult(unit_path)
    live = run_systemctl and systemd_running()
    if live and unit_path.exists():
        _run(["systemctl", "disable", "--now", UNIT_NAME], result)
    elif not live:
        result.to_run.append(f"systemctl stop {UNIT_NAME}  # if it is still running")
    try:
        unit_path.unlink()
        result.done.append(f"removed {unit_path}")
    except FileNotFoundError:
        result.done.append(f"{unit_path} was not installed")
    except OSError as exc:
        result.errors.append(f"removing {unit_path}: {exc}")
    _systemctl([["systemctl", "daemon-reload"]], run_systemctl, result)
    result.done.append(f"kept {state_dir} (credentials and unsent data); `rm -r {state_dir}` forgets this host")
    return result


def _systemctl(commands: list[list[str]], run_systemctl: bool, result: InstallResult) -> None:
    if run_systemctl and systemd_running():
        for command in commands:
            if not _run(command, result):
                break
    else:
        result.to_run.extend(" ".join(command) for command in commands)
