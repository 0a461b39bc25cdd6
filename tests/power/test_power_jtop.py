"""The jtop sampler against jetson-stats' own jtop service (JTOP_TESTING, fake sysfs)."""

from __future__ import annotations

import time

import pytest
from fake_jetson import sysfs
from fake_jetson.service import JtopTestService
from fake_jetson.tools import NVPMODEL_MODE

from bench.power.auto import make_sampler
from bench.power.base import PowerOptions
from bench.power.jtop import JtopSampler, rail_watts

INTERVAL_S = 0.1

# jetson-stats' client calls distro.linux_distribution(), deprecated upstream, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:distro.linux_distribution:DeprecationWarning")


def _sample(seconds: float, sampler: JtopSampler | None = None):
    sampler = sampler or JtopSampler(INTERVAL_S)
    sampler.start()
    time.sleep(seconds)
    return sampler.stop()


def test_reading_has_board_total_and_every_rail(jtop_service, fake_jetson):
    reading = _sample(1.0)
    board_w = fake_jetson[0].watts  # VDD_IN, 5 V x 1.2 A
    assert reading.reason is None, reading.reason
    assert reading.source == "jtop"
    assert reading.meta["total_rail"] == "VDD_IN"
    assert reading.meta["rails"] == sorted(r.label for r in fake_jetson)
    assert set(reading.rails) == {"tot"} | {r.label for r in fake_jetson[1:]}
    assert reading.mean_w == pytest.approx(board_w, rel=0.01)
    assert reading.rails["VDD_SOC"] == pytest.approx(fake_jetson[2].watts, rel=0.01)
    assert reading.energy_j == pytest.approx(board_w * reading.window_s, rel=0.01)
    assert reading.window_s == pytest.approx(1.0, abs=0.3)
    assert reading.samples >= 5


def test_reading_records_the_board_state(jtop_service):
    reading = _sample(0.3)
    meta = reading.meta
    assert reading.interval_s == pytest.approx(INTERVAL_S)
    assert meta["measured_interval_s"] == pytest.approx(INTERVAL_S, abs=0.05)
    assert (meta["nvpmodel"], meta["nvpmodel_id"]) == NVPMODEL_MODE
    assert meta["jetson_clocks"] is True  # the fake GPU is pinned at min == max
    assert meta["gpu_freq_khz"] == {"gpu": sysfs.GPU_FREQ_HZ // 1000}
    assert meta["board"].startswith("NVIDIA Jetson Orin NX")
    assert (meta["jetpack"], meta["l4t"]) == ("6.2.1", "36.4.3")
    assert meta["jetson_stats"]


def test_energy_follows_live_power_not_a_moving_average(jtop_service, fake_jetson):
    low, high = fake_jetson[0].watts, 2 * fake_jetson[0].watts
    sampler = JtopSampler(INTERVAL_S)
    sampler.start()
    t_start = time.monotonic()
    try:
        time.sleep(0.6)
        sysfs.set_current(1, 2 * fake_jetson[0].milliamps)
        t_step = time.monotonic()
        time.sleep(0.6)
    finally:
        t_stop = time.monotonic()
        reading = sampler.stop()
        sysfs.set_current(1, fake_jetson[0].milliamps)
    expected = low * (t_step - t_start) + high * (t_stop - t_step)
    # The service sees the step on its next tick: allow two ticks of the step's height.
    assert reading.energy_j == pytest.approx(expected, abs=2 * INTERVAL_S * (high - low))
    assert low < reading.mean_w < high


def test_auto_picks_jtop_when_the_service_runs(jtop_service):
    assert JtopSampler.unavailable_reason(PowerOptions(interval_s=INTERVAL_S)) is None
    sampler = make_sampler("auto", INTERVAL_S)
    assert isinstance(sampler, JtopSampler)
    assert _sample(0.2, sampler).mean_w > 0


def test_service_dying_mid_run_gives_an_empty_reading(fake_jetson, tmp_path, jtop_socket):
    service = JtopTestService.start(tmp_path / "dying")
    jtop_socket(service.socket)
    sampler = JtopSampler(INTERVAL_S)
    try:
        sampler.start()
        time.sleep(0.3)
    finally:
        service.stop()
    time.sleep(4 * INTERVAL_S)
    reading = sampler.stop()
    assert reading.mean_w is None and reading.energy_j is None
    assert reading.reason.startswith("jtop: failed after ")
    assert "\n" not in reading.reason


@pytest.mark.parametrize("stale_file", [False, True], ids=["no-socket", "stale-socket-file"])
def test_service_not_active_gives_jtops_reason(tmp_path, jtop_socket, stale_file):
    socket = tmp_path / "jtop.sock"
    if stale_file:  # left behind by a service that died: connecting is refused
        socket.write_text("")
    jtop_socket(socket)
    reason = JtopSampler.unavailable_reason()
    assert reason.startswith("jtop: The jtop.service is not active.")
    assert "\n" not in reason
    sampler = make_sampler("jtop")
    sampler.start()
    reading = sampler.stop()
    assert reading.mean_w is None
    assert reading.reason == "jtop: cannot start: " + reason.removeprefix("jtop: ")


def test_rail_watts_reads_instant_power_never_the_average():
    power = {
        "rail": {"VDD_SOC": {"power": 1500, "avg": 900}},
        "tot": {"power": 6000, "avg": 4000, "name": "VDD_IN"},
    }
    assert rail_watts(power) == {"VDD_SOC": 1.5, "tot": 6.0}


def test_a_service_ticking_slower_than_the_client_still_gives_power(fake_jetson, tmp_path,
                                                                     jtop_socket):
    """Another client (jtop's UI, say) set the service to 0.5 s before ours asks for 0.1 s.
    jtop's client waits 3 x its own interval for each snapshot, so on commit 96f8907 ok()
    timed out at 0.3 s and the reading came back empty."""
    import jtop

    service = JtopTestService.start(tmp_path / "slow")
    jtop_socket(service.socket)
    other = jtop.jtop(interval=0.5)
    other.start()
    try:
        reading = _sample(1.6)
    finally:
        other.close()
        service.stop()
    assert reading.reason is None, reading.reason
    assert reading.mean_w == pytest.approx(fake_jetson[0].watts, rel=0.01)
    assert reading.interval_s == pytest.approx(0.5)
    assert reading.meta["requested_interval_s"] == INTERVAL_S
    assert reading.meta["measured_interval_s"] == pytest.approx(0.5, abs=0.1)
    assert reading.samples >= 3
