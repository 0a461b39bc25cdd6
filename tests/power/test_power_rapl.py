"""The RAPL sampler against a fake powercap tree whose counters a thread advances."""

from __future__ import annotations

import time

import pytest
from fake_powercap import (
    DRAM_W,
    PACKAGE_RANGE_UJ,
    PACKAGE_W,
    PSYS_W,
    CounterWriter,
    build_powercap,
    write_counter,
)

from bench.power.base import PowerOptions
from bench.power.rapl import RaplSampler, find_domains


@pytest.fixture
def powercap(tmp_path):
    root = tmp_path / "powercap"
    writer = CounterWriter(build_powercap(root))
    writer.start()
    yield root, writer
    writer.halt.set()
    writer.join()


def test_domains_are_found_once_with_their_package(tmp_path):
    build_powercap(tmp_path)
    domains = {d.label: d for d in find_domains(tmp_path)}
    assert sorted(domains) == ["package-0", "package-0/dram", "psys"]
    assert [label for label, d in domains.items() if d.is_package] == ["package-0"]
    assert domains["package-0"].max_range_uj == PACKAGE_RANGE_UJ


def test_energy_counts_across_wraps(powercap):
    sampler = RaplSampler(interval_s=0.02, root=powercap[0])
    sampler.start()
    time.sleep(1.0)
    reading = sampler.stop()
    assert reading.reason is None, reading.reason
    assert reading.meta["counter_wraps"] >= 3
    assert reading.meta["total_of"] == ["package-0"]
    assert reading.mean_w == pytest.approx(PACKAGE_W, rel=0.05)
    assert reading.energy_j == pytest.approx(PACKAGE_W * reading.window_s, rel=0.05)
    assert reading.rails["package-0/dram"] == pytest.approx(DRAM_W, rel=0.05)
    assert reading.rails["psys"] == pytest.approx(PSYS_W, rel=0.05)  # reported, not summed
    assert reading.samples >= 10


def test_one_wrap_between_start_and_stop_is_exact(tmp_path):
    build_powercap(tmp_path)
    counter = tmp_path / "intel-rapl:0" / "energy_uj"
    write_counter(counter, 4_000_000)
    sampler = RaplSampler(interval_s=60.0, root=tmp_path)  # only the start and stop reads
    sampler.start()
    write_counter(counter, 1_000_000)  # went past 5 J and on to 1 J: 2 J in all
    reading = sampler.stop()
    assert reading.energy_j == pytest.approx(2.0)
    assert reading.meta["counter_wraps"] == 1
    assert reading.samples == 2
    assert reading.mean_w == pytest.approx(2.0 / reading.window_s)


def test_domain_vanishing_mid_run_gives_an_empty_reading(powercap):
    root, writer = powercap
    sampler = RaplSampler(interval_s=0.02, root=root)
    sampler.start()
    time.sleep(0.1)
    writer.remove(root / "intel-rapl:0" / "intel-rapl:0:2" / "energy_uj")
    time.sleep(0.1)
    reading = sampler.stop()
    assert reading.mean_w is None and reading.energy_j is None
    assert reading.reason.startswith("rapl: failed after ")
    assert "FileNotFoundError" in reading.reason and "\n" not in reading.reason


def test_unavailable_reasons_name_the_problem(tmp_path):
    assert RaplSampler.unavailable_reason(PowerOptions(rapl_root=tmp_path)) == (
        f"rapl: no intel-rapl:N package domain under {tmp_path}"
    )
    build_powercap(tmp_path)
    assert RaplSampler.unavailable_reason(PowerOptions(rapl_root=tmp_path)) is None
    counter = tmp_path / "intel-rapl:1" / "energy_uj"
    counter.unlink()
    counter.mkdir()  # unreadable as a number
    reason = RaplSampler.unavailable_reason(PowerOptions(rapl_root=tmp_path))
    assert reason.startswith(f"rapl: cannot read {counter}: ")


def test_unavailable_source_gives_an_empty_reading_not_an_error(tmp_path):
    sampler = RaplSampler(root=tmp_path / "missing")
    sampler.start()
    reading = sampler.stop()
    assert reading.mean_w is None
    assert reading.reason == (
        f"rapl: cannot start: no intel-rapl:N package domain under {tmp_path / 'missing'}"
    )
