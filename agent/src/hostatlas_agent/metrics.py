"""Host metrics: one `MetricsCollector.collect(now)` call per interval gives CONTRACT's series.

Everything is read through psutil from /proc and statvfs: no subprocess, a few hundred microseconds per call,
so the agent stays far under 1 % of a core at 15 s intervals.

Byte counters (disk, network) are sent as per-second rates. `CounterRates` turns raw counters into rates and
is pure (counters and monotonic times in, rates out) so that resets, wraps and vanished devices are tested
without a real host:
- the first sample of a key only primes it;
- a counter that goes backwards is a reset (device re-created, driver reloaded) and primes again, unless it
  looks like a 32-bit wrap (previous value in the upper half of 2**32, wrapped delta under 2**31);
- a key missing from a sample is forgotten, so a device that comes back starts again from a prime.

Disk I/O is reported for whole block devices only (those listed in /sys/block: disks, md, dm, nvme
namespaces), not their partitions: summing the series then gives the host's I/O without counting a byte
twice. loop* and ram* devices are skipped (snap images and ramdisks say nothing about the disks).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Hashable, Mapping
from typing import Callable, Generic, TypeVar

import psutil

log = logging.getLogger("hostatlas_agent.metrics")

Series = dict[str, object]

# Filesystems that hold no user data or that are images (snaps): their "used %" would only make noise.
PSEUDO_FILESYSTEMS = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts", "devtmpfs",
    "efivarfs", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "fusectl", "hugetlbfs", "iso9660", "mqueue",
    "nsfs", "overlay", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs",
    "tracefs", "udf", "aufs",
})
PSEUDO_MOUNT_PREFIXES = ("/proc", "/sys", "/dev", "/run", "/snap", "/var/lib/docker", "/var/snap")
SKIPPED_DISK_PREFIXES = ("loop", "ram")
SKIPPED_INTERFACES = frozenset({"lo"})

_WRAP_32 = 2**32

Key = TypeVar("Key", bound=Hashable)
CounterKey = tuple[str, str, str]  # (metric, label name, label value)
Value = tuple[str, dict[str, str], float]


def _clean_label(value: str) -> str:
    """The platform's label syntax reserves ',' and '=', and refuses NUL."""
    return value.replace(",", "_").replace("=", "_").replace("\x00", "")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class CounterRates(Generic[Key]):
    """Per-second rates of monotonically increasing counters, robust to resets and 32-bit wraps."""

    def __init__(self) -> None:
        self._last: dict[Key, tuple[int, float]] = {}

    def update(self, counters: Mapping[Key, int], at: float) -> dict[Key, float]:
        """Rates since the previous update for every key seen both times; `at` is a monotonic time."""
        rates: dict[Key, float] = {}
        previous, self._last = self._last, {key: (int(value), at) for key, value in counters.items()}
        for key, value in counters.items():
            if key not in previous:
                continue
            rate = self._rate(previous[key], int(value), at)
            if rate is not None:
                rates[key] = rate
        return rates

    @staticmethod
    def _rate(previous: tuple[int, float], value: int, at: float) -> float | None:
        last_value, last_at = previous
        elapsed = at - last_at
        if elapsed <= 0:
            return None
        delta = value - last_value
        if delta < 0:
            wrapped = value + _WRAP_32 - last_value
            if not (_WRAP_32 // 2 <= last_value < _WRAP_32 and wrapped < _WRAP_32 // 2):
                return None  # a reset: this sample primes again
            delta = wrapped
        return round(delta / elapsed, 1)


class MetricsCollector:
    """Collects CONTRACT's metrics; `clock` is the monotonic clock the byte rates are measured with."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rates: CounterRates[CounterKey] = CounterRates()
        self._latest: dict[str, float] = {}
        self._warned: set[str] = set()
        # psutil measures CPU use between two calls: this first one only sets the starting point.
        psutil.cpu_percent(interval=None)

    def collect(self, now: float) -> list[Series]:
        ts = int(now)
        values: list[Value] = []
        for part in (self._cpu, self._load, self._memory, self._disk_usage, self._byte_rates):
            try:
                values.extend(part())
            except Exception:  # one unreadable source must not cost the others
                self._warn_once(part.__name__, "cannot collect %s", part.__name__.strip("_"))
        series: list[Series] = []
        latest: dict[str, float] = {}
        for metric, labels, value in values:
            if not math.isfinite(value):
                continue
            series.append({"metric": metric, "labels": labels, "points": [[ts, value]]})
            if not labels or metric == "disk.used_percent" and labels.get("mount") == "/":
                latest[metric] = value
        self._latest = latest
        return series

    def latest(self) -> dict[str, float]:
        """The last unlabeled values and the root filesystem's use, for crash reports."""
        return dict(self._latest)

    def _cpu(self) -> list[Value]:
        return [("cpu.percent", {}, round(float(psutil.cpu_percent(interval=None)), 2))]

    def _load(self) -> list[Value]:
        one, five, fifteen = os.getloadavg()
        return [("load.1", {}, round(one, 2)), ("load.5", {}, round(five, 2)), ("load.15", {}, round(fifteen, 2))]

    def _memory(self) -> list[Value]:
        memory = psutil.virtual_memory()
        swap = psutil.swap_memory()
        # "Used" as total minus available, the figure psutil's percent (and `free`'s available column) rests on.
        used = float(memory.total - memory.available)
        return [
            ("mem.used_bytes", {}, used),
            ("mem.used_percent", {}, round(float(memory.percent), 2)),
            ("swap.used_percent", {}, round(float(swap.percent), 2)),
        ]

    def _disk_usage(self) -> list[Value]:
        values: list[Value] = []
        for mountpoint in real_mountpoints():
            try:
                percent = psutil.disk_usage(mountpoint).percent
            except OSError:  # includes PermissionError: a mount we may not stat, or one gone meanwhile
                self._warn_once("mount:" + mountpoint, "cannot read usage of %s", mountpoint)
                continue
            values.append(("disk.used_percent", {"mount": _clean_label(mountpoint)}, round(float(percent), 2)))
        return values

    def _byte_rates(self) -> list[Value]:
        counters: dict[CounterKey, int] = {}
        whole_disks = _whole_block_devices()
        for device, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
            if device.startswith(SKIPPED_DISK_PREFIXES):
                continue
            if whole_disks is not None and device not in whole_disks:
                continue
            counters[("disk.read_bytes", "device", device)] = io.read_bytes
            counters[("disk.write_bytes", "device", device)] = io.write_bytes
        for iface, net in (psutil.net_io_counters(pernic=True) or {}).items():
            if iface in SKIPPED_INTERFACES:
                continue
            counters[("net.rx_bytes", "iface", iface)] = net.bytes_recv
            counters[("net.tx_bytes", "iface", iface)] = net.bytes_sent
        rates = self._rates.update(counters, self._clock())
        values: list[Value] = []
        for (metric, label, name), rate in sorted(rates.items()):
            values.append((metric, {label: _clean_label(name)}, rate))
        return values

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args, exc_info=True)


def real_mountpoints() -> list[str]:
    """Mountpoints of filesystems holding data, one per device (the shortest path wins over bind mounts)."""
    chosen: dict[str, str] = {}
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FILESYSTEMS or not part.fstype:
            continue
        if any(_under(part.mountpoint, prefix) for prefix in PSEUDO_MOUNT_PREFIXES):
            continue
        device = part.device or part.mountpoint
        current = chosen.get(device)
        if current is None or len(part.mountpoint) < len(current):
            chosen[device] = part.mountpoint
    return sorted(chosen.values())


def _whole_block_devices() -> set[str] | None:
    """Names in /sys/block (whole disks); None when it cannot be read, and then every device is kept."""
    try:
        return set(os.listdir("/sys/block"))
    except OSError:
        return None
