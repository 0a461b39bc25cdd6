"""A simulated drifting machine for the verdict tests: alternating probe/model blocks.

Per call: latency = base × machine speed(t) × lognormal noise, with occasional slow
outliers. The machine's speed differs between runs (×0.85–1.18), walks within a run and
jumps by up to 2× at random moments (also in the middle of a block), as the 2-core shared
machine does. The model/probe ratio also varies a little from run to run (sd 2 %), an
effect the probe cannot cancel and a within-run interval does not see.
"""

from __future__ import annotations

import numpy as np

from bench.measure.stats import normalised_latency

PROBE_S = 1.5e-3
MODEL_S = 2.0e-3


def machine_speed(rng: np.random.Generator, n_calls: int) -> np.ndarray:
    log_s = np.log(rng.uniform(0.85, 1.18)) + np.cumsum(rng.normal(0.0, 0.004, n_calls))
    jumps = rng.random(n_calls) < 0.004
    log_s += np.cumsum(np.where(jumps, rng.normal(0.0, 0.15, n_calls), 0.0))
    return np.exp(np.clip(log_s, np.log(0.5), np.log(2.0)))


def simulate_run(rng: np.random.Generator, slowdown: float = 1.0, n_blocks: int = 20,
                 calls: int = 10, sigma: float = 0.10,
                 offset_sd: float = 0.02) -> tuple[np.ndarray, float]:
    """One run: probe and model blocks alternating P M P M ... P; returns the per-block
    normalised latency and the probe's median latency."""
    n_probe = n_blocks + 1
    speed = machine_speed(rng, (n_blocks + n_probe) * calls).reshape(-1, calls)
    noise = rng.lognormal(0.0, sigma, speed.shape)
    noise *= np.where(rng.random(speed.shape) < 0.05, 1.5, 1.0)
    run_offset = rng.lognormal(0.0, offset_sd)
    base = np.where(np.arange(len(speed))[:, None] % 2 == 0, PROBE_S,
                    MODEL_S * slowdown * run_offset)
    times = base * speed * noise
    probe, model = times[0::2], times[1::2]
    return normalised_latency(list(model), list(probe)), float(np.median(probe))
