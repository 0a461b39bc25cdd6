"""The engines a run keeps beside each variant: the fp32 reference and the speed probe,
plus the power source, opened once and freed at the end.

The fp32 engine times blocks beside every other variant (the speedup); the probe, a small
fixed model on the same backend and threads, times blocks beside every variant (latency
comparable across runs). When either cannot open, the variant's own figures stand and the
error is kept for the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.errors import one_line
from bench.variants import REFERENCE, spec_of

if TYPE_CHECKING:
    from bench.engines.base import Engine
    from bench.power.base import Sampler
    from bench.run import RunContext


class References:
    """Opens variant engines with the run's settings and keeps the reference engines."""

    def __init__(self, run: RunContext):
        self.run, self.cfg = run, run.cfg
        self._anchor: Engine | None = None
        self._probes: dict[str, Engine] = {}  # probe kind (bench.measure.probe) -> engine
        self.errors: dict[str, str] = {}  # "fp32" / "probe" -> why it could not open
        self.runtime: dict[str, str | None] = {}  # the first engine's version and device
        self._power_source: Any = None  # the source "auto" picked, or its NoneSampler

    def open(self, variant: str, path: Path) -> Engine:
        """An active engine for one variant's artifact, with the run's sizes."""
        from bench.engines.factory import make_engine

        inputs, context, cfg = self.run.inputs(), self.run.build_context(), self.cfg
        engine = make_engine(cfg, spec_of(variant), path, calibration=context.calib_batches,
                             calibration_id=context.calib_id, image_size=inputs.imgsz,
                             max_batch=max(cfg.batch, cfg.eval_batch, inputs.fixed_batch or 1)
                             ).activate()
        if not self.runtime:  # what the environment record says the run ran on
            self.runtime = {"runtime_version": engine.runtime_version(),
                            "device_name": engine.device_name()}
        return engine

    def anchor(self, variant: str) -> Engine | None:
        """The fp32 engine, for every variant but fp32 itself."""
        if variant == REFERENCE or "fp32" in self.errors:
            return None
        if self._anchor is None:
            from bench.build import build_variant

            try:
                path = build_variant(REFERENCE, self.run.build_context()).path
                self._anchor = self.open(REFERENCE, path)
            except Exception as exc:  # the variant's own figures stand; speedup unpaired
                self.errors["fp32"] = one_line(exc)
                return None
        return self._anchor

    def probe(self, variant: str) -> tuple[Engine, np.ndarray] | None:
        """The speed probe for this variant's precision (bench.measure.probe.probe_kind) on
        the run's backend and threads, with its fixed input."""
        from bench.measure.probe import probe_batch, probe_file, probe_kind

        kind = probe_kind(spec_of(variant).artifact)
        key = "probe" if kind == "fp32" else f"probe_{kind}"
        if key in self.errors:
            return None
        if kind not in self._probes:
            try:
                path = probe_file(Path(self.cfg.cache_dir) / "probe", kind, self.cfg.profile)
                self._probes[kind] = self._open_probe(path, kind)
            except Exception as exc:
                self.errors[key] = one_line(exc)
                return None
        return self._probes[kind], probe_batch()

    def probe_identity(self, variant: str) -> dict[str, str] | None:
        """Which probe normalised this variant's row (None when none was timed)."""
        from bench.measure.probe import probe_kind, row_probe_identity

        kind = probe_kind(spec_of(variant).artifact)
        if kind not in self._probes:
            return None
        return row_probe_identity(kind, self.cfg.profile)

    def _open_probe(self, path: Path, kind: str) -> Engine:
        from bench.engines.factory import make_engine

        # the INT8 probe is a Q/DQ graph: opened as a Q/DQ variant is (TensorRT builds INT8)
        spec = spec_of(REFERENCE if kind == "fp32" else "int8-max")
        return make_engine(self.cfg, spec, path).activate()

    def sampler(self) -> Sampler:
        """A fresh sampler per window; "auto" probes the sources once per run."""
        from bench.power.auto import make_sampler

        interval = self.cfg.power_interval_s
        # NVML must read the GPU the engine runs on (matched by PCI bus id)
        device = self.cfg.device if self.cfg.device.startswith("cuda") else None
        if self._power_source is None:
            first = make_sampler(self.cfg.power, interval_s=interval, cuda_device=device)
            self._power_source = first if first.source == "none" else first.source
            return first
        if isinstance(self._power_source, str):
            return make_sampler(self._power_source, interval_s=interval, cuda_device=device)
        return self._power_source

    def notes(self) -> dict[str, str]:
        """For a row's extra: which reference could not be timed beside it, and why."""
        return {f"{name}_unavailable": why for name, why in self.errors.items()}

    def close(self) -> None:
        for engine in (self._anchor, *self._probes.values()):
            if engine is not None:
                engine.deactivate()
        self._anchor, self._probes = None, {}
