"""The sampler for "no power figures": an empty reading that says why."""

from __future__ import annotations

from bench.power.base import PowerOptions, PowerReading, Sampler, one_line


class NoneSampler(Sampler):
    """Measures nothing; stop() returns an empty reading carrying the reason."""

    source = "none"

    def __init__(self, reason: str = "power sampling disabled (power source 'none')"):
        self.reason = one_line(reason)

    @classmethod
    def unavailable_reason(cls, options: PowerOptions | None = None) -> str | None:
        return None

    @classmethod
    def from_options(cls, options: PowerOptions) -> NoneSampler:
        return cls()

    def start(self) -> None:
        pass

    def stop(self) -> PowerReading:
        return PowerReading.empty(self.source, self.reason)
