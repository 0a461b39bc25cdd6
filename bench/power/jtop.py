"""jtop (jetson-stats): Jetson board power from the INA3221/INA238 rails via jtop.service.

The jtop client receives one snapshot per service tick; each rail's instantaneous
`power` (mW) is integrated over the window. jtop's `avg` is a running average of the
previous average and the newest value, not a mean over anything we control, so it is
never used. The total is jtop's `tot`: the board input rail (VDD_IN, POM_5V_IN or VIN)
where the board has one, else jtop's sum of the rails. jetson-stats is imported lazily.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from bench.errors import EngineUnavailable
from bench.power.base import PowerOptions, PowerReading, one_line
from bench.power.integrate import median_interval_s, summarize_rails
from bench.power.polling import PollingSampler

TOTAL = "tot"
SUM_OF_RAILS = "sum of rails"  # jtop's total on boards without an input rail


def _import_jtop() -> Any:
    try:
        import jtop
    except ImportError as exc:
        raise EngineUnavailable("jetson-stats is not installed (pip install jetson-stats)") from exc
    return jtop


HANDSHAKE_ATTEMPTS = 3  # at the requested interval, then once at jtop's default 1 s
JTOP_DEFAULT_INTERVAL_S = 1.0


def connect(interval_s: float) -> Any:
    """A started jtop client that keeps up with the running service.

    jtop's client waits 3 x its own interval for the handshake reply and for each
    snapshot. The handshake timing out raises queue.Empty: retried, then once more with
    jtop's default 1 s interval. A service already ticking slower than interval_s (the
    first client sets the tick) would make every ok() time out: the client is then
    reopened at the service's own interval. EngineUnavailable with jtop's reason when no
    client can be started.
    """
    client = _start(interval_s)
    service_s = _safe(lambda: float(client.interval)) or 0.0
    if service_s > interval_s * 1.05:
        _close_quietly(client)
        client = _start(service_s)
    return client


def _start(interval_s: float) -> Any:
    jtop = _import_jtop()
    tries = [interval_s] * HANDSHAKE_ATTEMPTS
    if interval_s < JTOP_DEFAULT_INTERVAL_S:
        tries.append(JTOP_DEFAULT_INTERVAL_S)
    for interval in tries:
        client = jtop.jtop(interval=interval)
        try:
            client.start()
            return client
        except jtop.JtopException as exc:
            _close_quietly(client)
            raise EngineUnavailable(one_line(str(exc))) from exc
        except queue.Empty:  # no handshake reply within 3 x interval: a busy service
            _close_quietly(client)
        except (OSError, EOFError) as exc:  # a socket that exists but does not answer
            _close_quietly(client)
            raise EngineUnavailable(one_line(f"{type(exc).__name__}: {exc}")) from exc
    raise EngineUnavailable(f"jtop.service did not answer the handshake ({len(tries)} tries, "
                            f"the last waiting {3 * tries[-1]:g} s)")


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: S110 - the client never connected; nothing to release
        pass


def rail_watts(power: dict[str, Any]) -> dict[str, float]:
    """jtop's `power` dict -> W per rail, the total under "tot"."""
    watts = {name: rail["power"] / 1000.0 for name, rail in power.get("rail", {}).items()}
    if "tot" in power:
        watts[TOTAL] = power["tot"]["power"] / 1000.0
    return watts


class JtopSampler(PollingSampler):
    """Board power from jtop.service; rails = mean W per rail plus "tot" (the board)."""

    source = "jtop"
    final_sample = False  # samples come on the service's clock

    @classmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        # The probe connects for real (the reason is jtop's own), at the interval the
        # sampler will ask for: the first client sets the service's tick.
        interval_s = (options or PowerOptions()).interval_s
        try:
            client = connect(interval_s)
        except EngineUnavailable as exc:
            return f"jtop: {exc}"
        try:
            if not client.power:
                return "jtop: jtop.service reports no power rails on this board"
        finally:
            _close_quietly(client)
        return None

    def _open(self) -> None:
        self._client = connect(self.interval_s)
        self._total_rail = SUM_OF_RAILS

    def _wait(self) -> bool:
        return not self._stopping.is_set()  # _read() itself waits for the next tick

    def _read(self) -> dict[str, float]:
        client = self._client
        if not client.ok():  # blocks until the service's next snapshot; raises its errors
            waited = 3 * float(client.interval_user)
            raise EngineUnavailable(f"no data from jtop.service for {waited:.3g} s (service "
                                    f"interval {_safe(lambda: client.interval)} s)")
        power = client.power
        if not power or not power.get("tot"):
            raise EngineUnavailable("jtop.service reports no power rails on this board")
        self._total_rail = power["tot"].get("name", self._total_rail)
        return rail_watts(power)

    def _close(self) -> None:
        self._client.close()

    def _summarize(self, t0: float, t1: float) -> PowerReading:
        rails = summarize_rails(self._times, self._values, t0, t1)
        energy, mean = rails[TOTAL]
        return PowerReading(
            source=self.source,
            mean_w=mean,
            energy_j=energy,
            window_s=t1 - t0,
            samples=len(self._times),
            interval_s=_safe(lambda: float(self._client.interval)),
            rails={name: watts for name, (_, watts) in rails.items()},
            meta=self._meta(),
        )

    def _meta(self) -> dict[str, Any]:
        client = self._client
        hardware = _safe(lambda: client.board["hardware"]) or {}
        return {
            "total_rail": self._total_rail,
            "rails": self._rail_names(),
            "requested_interval_s": self.interval_s,
            "measured_interval_s": median_interval_s(self._times),
            "nvpmodel": _safe(lambda: client.nvpmodel.name),
            "nvpmodel_id": _safe(lambda: client.nvpmodel.id),
            "jetson_clocks": _jetson_clocks(client),
            "jetson_clocks_status": _safe(lambda: client.jetson_clocks.status),
            "gpu_freq_khz": _safe(lambda: {n: g["freq"]["cur"] for n, g in client.gpu.items()}),
            "board": hardware.get("Model") or None,
            "module": hardware.get("Module") or None,
            "jetpack": hardware.get("Jetpack") or None,
            "l4t": hardware.get("L4T") or None,
            "jetson_stats": _safe(lambda: _import_jtop().__version__),
        }

    def _rail_names(self) -> list[str]:
        """The board's rail names as jtop reports them, the input rail included."""
        names = set(self._values[-1]) - {TOTAL}
        if self._total_rail != SUM_OF_RAILS:
            names.add(self._total_rail)
        return sorted(names)


def _jetson_clocks(client: Any) -> bool | None:
    """jetson_clocks on/off, None where the board has no jetson_clocks."""
    state = _safe(lambda: client.jetson_clocks)
    return None if state is None else bool(state)


def _safe(read: Callable[[], Any]) -> Any:
    """A metadata field, or None where this board or jtop version does not have it."""
    try:
        return read()
    except Exception:
        return None
