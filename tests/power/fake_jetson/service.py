"""Starts and stops jetson-stats' jtop service on the fake sysfs, as a subprocess."""

from __future__ import annotations

import grp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from fake_jetson.tools import write_tools

SERVE = Path(__file__).with_name("serve.py")
GROUP = "jtop"  # JtopServer.start() gives its socket to this group and fails without it


def ensure_group() -> None:
    """Create the jtop group, as `jtop --install` does on a Jetson (needs root)."""
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        groupadd = shutil.which("groupadd") or "/usr/sbin/groupadd"
        if not Path(groupadd).exists():
            raise RuntimeError(f"group {GROUP!r} is missing and there is no groupadd") from None
        subprocess.run([groupadd, "--system", GROUP], check=True, capture_output=True)


@dataclass
class JtopTestService:
    process: subprocess.Popen
    socket: Path
    log: Path

    @classmethod
    def start(cls, workdir: Path, timeout_s: float = 30.0) -> JtopTestService:
        workdir.mkdir(parents=True, exist_ok=True)
        jetson_clocks = write_tools(workdir / "bin")
        config = workdir / "config"  # jtop's config.json and l4t_dfs.conf go here
        config.mkdir(exist_ok=True)
        # AF_UNIX paths stop at 107 bytes; a deep --basetemp must not break the socket.
        socket = Path(tempfile.mkdtemp(prefix="qb-jtop-", dir="/tmp")) / "jtop.sock"
        log = workdir / "service.log"
        env = dict(
            os.environ,
            JTOP_TESTING="true",
            PYTHONUNBUFFERED="1",
            PATH=f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        args = [sys.executable, str(SERVE), str(socket), str(config), str(jetson_clocks)]
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        service = cls(process, socket, log)
        service._wait_ready(timeout_s)
        return service

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM (the service closes itself), then SIGKILL to its own process group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        shutil.rmtree(self.socket.parent, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"jtop test service did not start:\n{self.log_tail()}")
            time.sleep(0.05)
