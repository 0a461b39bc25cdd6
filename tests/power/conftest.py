"""Fixtures for the power tests: jetson-stats' own jtop service on a fake Jetson sysfs."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest
from fake_jetson import sysfs
from fake_jetson.service import JtopTestService, ensure_group

LOCK = "/tmp/yolo-qbench-fake-jetson.lock"


def _require_root() -> None:
    if os.geteuid() != 0:  # JtopServer refuses to run otherwise ("jtop service need sudo")
        pytest.skip("jtop's service runs only as root; run these tests as root (CI does)")


# Module scope: the service must not outlive the module that asked for it, or a later
# test's make_sampler("auto") would find it.
@pytest.fixture(scope="module")
def fake_jetson() -> Iterator[tuple[sysfs.Rail, ...]]:
    """The fake /fake_sys tree; yields the rails it exposes."""
    _require_root()
    # /fake_sys is one fixed path: with pytest-xdist, workers take turns holding it.
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sysfs.build()
        try:
            yield sysfs.RAILS
        finally:
            sysfs.remove()


@pytest.fixture(scope="module")
def jtop_service(fake_jetson, tmp_path_factory) -> Iterator[JtopTestService]:
    """A running jtop service; jtop clients in this process connect to its socket."""
    import jtop.service

    ensure_group()
    service = JtopTestService.start(tmp_path_factory.mktemp("jtop"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jtop.service, "JTOP_PIPE", str(service.socket))
        yield service
    service.stop()


@pytest.fixture
def jtop_socket(monkeypatch):
    """Point jtop clients in this process at a socket path of the test's choosing."""
    import jtop.service

    def point_at(path) -> None:
        monkeypatch.setattr(jtop.service, "JTOP_PIPE", str(path))

    return point_at
