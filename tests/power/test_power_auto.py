"""make_sampler: a named source, or the first one this machine can read."""

from __future__ import annotations

import pytest
from fake_powercap import build_powercap

from bench.errors import ConfigError
from bench.power.auto import make_sampler
from bench.power.none import NoneSampler
from bench.power.nvml import NvmlSampler
from bench.power.rapl import RaplSampler

# jetson-stats' client calls distro.linux_distribution(), deprecated upstream, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:distro.linux_distribution:DeprecationWarning")


@pytest.fixture
def no_jtop_service(tmp_path, jtop_socket):
    jtop_socket(tmp_path / "no-jtop.sock")


def test_unknown_source_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as error:
        make_sampler("tegrastats")
    assert str(error.value) == (
        "power source 'tegrastats' is unknown; expected one of auto, jtop, nvml, rapl, none"
    )


def test_interval_must_be_positive():
    with pytest.raises(ConfigError, match="interval 0 s must be > 0"):
        make_sampler("none", interval_s=0)


def test_none_is_empty_with_a_reason():
    sampler = make_sampler("none")
    sampler.start()
    reading = sampler.stop()
    assert isinstance(sampler, NoneSampler) and reading.mean_w is None
    assert reading.reason == "power sampling disabled (power source 'none')"


def test_auto_on_this_machine_says_why_for_every_source(no_jtop_service, tmp_path):
    if NvmlSampler.unavailable_reason() is None:
        pytest.skip("an NVIDIA GPU is readable here, so auto rightly picks NVML")
    sampler = make_sampler("auto", rapl_root=tmp_path / "no-powercap")
    sampler.start()
    reading = sampler.stop()
    assert isinstance(sampler, NoneSampler) and reading.mean_w is None
    jtop, nvml, rapl = reading.reason.removeprefix("no power source: ").split("; ")
    assert jtop.startswith("jtop: The jtop.service is not active.")
    assert nvml.startswith("nvml: ")
    assert rapl == f"rapl: no intel-rapl:N package domain under {tmp_path / 'no-powercap'}"


def test_auto_on_the_default_sysfs_is_empty_or_reads_rapl(no_jtop_service):
    if NvmlSampler.unavailable_reason() is None:
        pytest.skip("an NVIDIA GPU is readable here, so auto rightly picks NVML")
    sampler = make_sampler("auto", interval_s=0.05)
    sampler.start()
    reading = sampler.stop()
    rapl_reason = RaplSampler.unavailable_reason()
    if rapl_reason is None:  # an x86 host with readable RAPL counters
        assert reading.source == "rapl" and reading.mean_w is not None
    else:
        assert reading.source == "none" and reading.reason.endswith(rapl_reason)


def test_auto_takes_rapl_after_jtop_and_nvml(no_jtop_service, tmp_path):
    if NvmlSampler.unavailable_reason() is None:
        pytest.skip("an NVIDIA GPU is readable here, so auto rightly picks NVML")
    build_powercap(tmp_path)
    sampler = make_sampler("auto", interval_s=0.05, rapl_root=tmp_path)
    assert isinstance(sampler, RaplSampler) and sampler.root == tmp_path
