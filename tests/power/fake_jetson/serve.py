"""Runs jetson-stats' own JtopServer on the fake sysfs (start with JTOP_TESTING=true).

    python serve.py SOCKET CONFIG_DIR JETSON_CLOCKS

Everything the service computes is jtop's own; four places are pointed elsewhere so a
test never touches a real installation: the socket (not /run/jtop.sock, which a real
service on a Jetson may own), the config folder, the jetson_clocks path, and the board
identity (on x86 jtop would read DMI data, which containers often lack, and a Jetson
identity is what the sampler must record).
"""

import logging
import signal
import sys

BOARD = {
    "Model": "NVIDIA Jetson Orin NX (fake, jtop testing mode)",
    "Module": "NVIDIA Jetson Orin NX (16GB ram)",
    "SoC": "tegra234",
    "L4T": "36.4.3",
    "Jetpack": "6.2.1",
}


def _stop(*_):
    raise SystemExit(0)  # lets JtopServer.loop_for_ever() close the service cleanly


def main(socket_path: str, config_dir: str, jetson_clocks: str) -> None:
    import jtop.core.config
    import jtop.core.jetson_clocks
    import jtop.service

    jtop.service.JTOP_PIPE = socket_path
    jtop.service.get_hardware = lambda: dict(BOARD)
    jtop.core.config.get_config_service = lambda data_folder=None: config_dir
    jtop.core.jetson_clocks.PATH_JETSON_CLOCKS = [jetson_clocks]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    jtop.service.JtopServer(force=True).loop_for_ever()


if __name__ == "__main__":
    main(*sys.argv[1:4])
