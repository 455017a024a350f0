"""Metrics: counter rates on synthetic counters, and a real collection on this host."""

from __future__ import annotations

import math

from hostatlas_agent.metrics import CounterRates, MetricsCollector, real_mountpoints

T0 = 1_700_000_000.5


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_sample_only_primes() -> None:
    rates: CounterRates[str] = CounterRates()
    assert rates.update({"eth0": 1_000}, at=10.0) == {}


def test_rates_are_bytes_per_second_over_the_real_elapsed_time() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"eth0": 1_000}, at=10.0)
    assert rates.update({"eth0": 4_000}, at=13.0) == {"eth0": 1_000.0}
    assert rates.update({"eth0": 4_001}, at=16.0) == {"eth0": 0.3}


def test_a_counter_that_goes_backwards_primes_again_without_a_negative_rate_or_spike() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"eth0": 50_000_000_000}, at=10.0)
    assert rates.update({"eth0": 1_000}, at=25.0) == {}
    assert rates.update({"eth0": 16_000}, at=40.0) == {"eth0": 1_000.0}


def test_a_32_bit_wrap_is_counted_across_the_wrap() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"eth0": 2**32 - 1_000}, at=10.0)
    assert rates.update({"eth0": 2_000}, at=13.0) == {"eth0": 1_000.0}


def test_a_drop_from_low_in_the_32_bit_range_is_a_reset_not_a_wrap() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"eth0": 1_000_000}, at=10.0)
    assert rates.update({"eth0": 10}, at=13.0) == {}


def test_a_device_that_disappears_is_forgotten() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"sda": 100, "sdb": 100}, at=10.0)
    assert rates.update({"sda": 200}, at=11.0) == {"sda": 100.0}
    assert rates.update({"sda": 300, "sdb": 10_000}, at=12.0) == {"sda": 100.0}  # sdb primes again
    assert rates.update({"sda": 400, "sdb": 10_100}, at=13.0) == {"sda": 100.0, "sdb": 100.0}


def test_no_time_elapsed_gives_no_rate() -> None:
    rates: CounterRates[str] = CounterRates()
    rates.update({"eth0": 100}, at=10.0)
    assert rates.update({"eth0": 200}, at=10.0) == {}


def _point(item: dict[str, object]) -> tuple[int, float]:
    points = item["points"]
    assert isinstance(points, list) and len(points) == 1
    timestamp, value = points[0]
    return timestamp, value


def _label(item: dict[str, object], name: str) -> str:
    labels = item["labels"]
    assert isinstance(labels, dict)
    return str(labels[name])


def _by_name(series: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    grouped: dict[str, list[dict[str, object]]] = {}
    for item in series:
        grouped.setdefault(str(item["metric"]), []).append(item)
    return grouped


def test_collect_reports_the_contract_metrics_of_this_host() -> None:
    clock = FakeMonotonic()
    collector = MetricsCollector(clock=clock)
    first = _by_name(collector.collect(T0))
    for name in ("cpu.percent", "load.1", "load.5", "load.15", "mem.used_bytes", "mem.used_percent",
                 "swap.used_percent", "disk.used_percent"):
        assert name in first, name
    assert not any(name.endswith("_bytes") and name != "mem.used_bytes" for name in first)  # rates only prime

    clock.now += 15
    series = collector.collect(T0 + 15)
    second = _by_name(series)
    assert "disk.read_bytes" in second or "net.rx_bytes" in second
    for item in series:
        timestamp, value = _point(item)
        assert timestamp == int(T0 + 15) and isinstance(timestamp, int)
        assert isinstance(value, float) and math.isfinite(value)
        labels = item["labels"]
        assert isinstance(labels, dict)
        assert all(isinstance(v, str) and not set(v) & {",", "=", "\x00"} for v in labels.values())
    assert all(item["labels"] != {"iface": "lo"} for item in series)
    assert {_label(item, "mount") for item in second["disk.used_percent"]} == set(real_mountpoints())
    assert all(0 <= _point(item)[1] <= 100 for item in second["mem.used_percent"] + second["cpu.percent"])


def test_latest_holds_the_unlabeled_values_and_the_root_disk() -> None:
    collector = MetricsCollector(clock=FakeMonotonic())
    assert collector.latest() == {}
    collector.collect(T0)
    latest = collector.latest()
    assert {"cpu.percent", "load.1", "mem.used_percent", "swap.used_percent"} <= set(latest)
    if "/" in real_mountpoints():
        assert 0 <= latest["disk.used_percent"] <= 100


def test_pseudo_filesystems_are_not_reported() -> None:
    mounts = real_mountpoints()
    assert len(mounts) == len(set(mounts))
    for mount in mounts:
        assert not mount.startswith(("/proc", "/sys", "/dev", "/run", "/snap"))
