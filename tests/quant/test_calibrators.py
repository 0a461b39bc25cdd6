import math

import numpy as np
import pytest

from bench.errors import ConfigError
from bench.quant.calibrators import METHODS, compute_amax
from bench.quant.histogram import AbsHistogram


def _hist(x, bins=2048):
    hist = AbsHistogram(bins=bins)
    hist.update(x)
    return hist


def _gaussian_with_outliers(n=400_000, outliers=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    x[:outliers] = rng.uniform(20.0, 40.0, outliers) * rng.choice([-1, 1], outliers)
    return rng.permutation(x)


# --- independent references ------------------------------------------------------------


def _kl_direct(p, q):
    """KL(P||Q) of two unnormalised distributions, straight from the definition."""
    p, q = p / p.sum(), q / q.sum()
    support = p > 0
    if (q[support] == 0).any():
        return math.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def _entropy_reference(hist, levels, start_bin):
    """Builds P and Q for every threshold and evaluates KL directly (TensorRT's recipe)."""
    counts = hist.counts.astype(np.float64)
    counts[0] = counts[1]
    best, best_kl = None, math.inf
    for i in range(start_bin, hist.bins + 1):
        kept = counts[:i]
        p = kept.copy()
        p[-1] += counts[i:].sum()  # the clipped tail goes into the last kept bin
        group = np.arange(i) * levels // i
        nonempty = kept > 0
        group_sum = np.bincount(group, weights=kept, minlength=levels)
        group_nonempty = np.bincount(group, weights=nonempty, minlength=levels)
        q = np.where(nonempty, group_sum[group] / np.maximum(group_nonempty[group], 1), 0.0)
        kl = _kl_direct(p, q)
        if kl <= best_kl + 1e-12:  # ties go to the widest threshold
            best, best_kl = i, min(kl, best_kl)
    return best * hist.bin_width


def _fake_quant(x, amax, steps=127):
    return np.clip(np.round(x / amax * steps), -steps, steps) * amax / steps


def _sample_mse(x, amax):
    return float(np.mean((_fake_quant(x, amax) - x) ** 2))


# --- max ---------------------------------------------------------------------------------


def test_max_is_the_exact_max_abs():
    x = _gaussian_with_outliers()
    amax = compute_amax(_hist(x), "max")
    assert amax == float(np.abs(x).max())


# --- percentile --------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [50.0, 99.0, 99.9, 99.99])
@pytest.mark.parametrize("dist", ["normal", "laplace", "uniform"])
def test_percentile_matches_numpy_percentile_of_the_samples(dist, percentile):
    rng = np.random.default_rng(5)
    x = getattr(rng, dist)(size=300_000).astype(np.float32)
    hist = _hist(x)
    expected = np.percentile(np.abs(x), percentile)
    assert compute_amax(hist, "percentile", percentile=percentile) == pytest.approx(
        expected, abs=1.5 * hist.bin_width
    )


def test_percentile_100_is_the_max():
    x = _gaussian_with_outliers()
    assert compute_amax(_hist(x), "percentile", percentile=100.0) == float(np.abs(x).max())


# --- entropy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bins", "levels", "start_bin", "seed"),
    [(256, 16, 16, 0), (256, 16, 16, 1), (300, 32, 40, 2), (2048, 128, 128, 3)],
)
def test_entropy_matches_a_direct_kl_computation(bins, levels, start_bin, seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.laplace(size=20_000), rng.normal(0, 8, size=30)])
    hist = _hist(x, bins=bins)
    amax = compute_amax(hist, "entropy", num_quant_levels=levels, start_bin=start_bin)
    assert amax == pytest.approx(_entropy_reference(hist, levels, start_bin), rel=1e-9)


def test_entropy_keeps_the_whole_range_of_a_uniform_distribution():
    x = np.random.default_rng(6).uniform(-1.0, 1.0, 200_000)
    assert compute_amax(_hist(x), "entropy") > 0.9


def test_entropy_clips_outliers_that_max_keeps():
    x = _gaussian_with_outliers()
    amax_max, amax_entropy = compute_amax(_hist(x), "max"), compute_amax(_hist(x), "entropy")
    assert amax_max > 20.0
    assert 2.5 < amax_entropy < 0.25 * amax_max


# --- mse ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_mse_is_near_the_brute_force_optimum_of_fake_quantized_samples(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.laplace(size=100_000), rng.normal(0, 6, size=50)])
    amax = compute_amax(_hist(x), "mse")
    grid = np.linspace(0.02, 1.0, 400) * np.abs(x).max()
    errors = [_sample_mse(x, a) for a in grid]
    best = grid[int(np.argmin(errors))]
    assert _sample_mse(x, amax) <= 1.03 * min(errors)
    assert amax == pytest.approx(best, rel=0.15)


def test_methods_order_sensibly_on_a_gaussian_with_outliers():
    x = _gaussian_with_outliers()
    hist = _hist(x)
    amax = {m: compute_amax(hist, m) for m in METHODS}
    assert all(type(value) is float for value in amax.values())
    assert amax["max"] == max(amax.values())
    assert amax["entropy"] != amax["max"]
    assert 3.5 < amax["percentile"] < 4.5  # 99.99 % of a unit Gaussian's |x|: 3.89
    assert amax["entropy"] < amax["mse"] < amax["max"]


# --- streaming ---------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["shuffled", "ascending"])
def test_streaming_with_range_growth_gives_nearly_the_one_pass_amax(order):
    x = _gaussian_with_outliers(seed=7)
    if order == "ascending":  # the worst case: the range grows with every chunk
        x = np.sort(np.abs(x))
    whole, streamed = _hist(x), AbsHistogram()
    for chunk in np.array_split(x, 64):
        streamed.update(chunk)
    assert streamed.fine_range > whole.fine_range  # growth did happen
    one = {m: compute_amax(whole, m) for m in METHODS}
    many = {m: compute_amax(streamed, m) for m in METHODS}
    assert many["max"] == one["max"]
    assert many["percentile"] == pytest.approx(one["percentile"], abs=streamed.bin_width)
    assert many["entropy"] == pytest.approx(one["entropy"], rel=0.01)
    assert many["mse"] == pytest.approx(one["mse"], rel=0.01)


# --- edge cases and errors ---------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_all_zero_tensor_gives_zero_amax(method):
    assert compute_amax(_hist(np.zeros(100)), method) == 0.0


def test_unknown_method_is_a_config_error_naming_value_and_choices():
    with pytest.raises(ConfigError, match=r"'kl'.*entropy.*percentile"):
        compute_amax(_hist(np.ones(10)), "kl")


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5, float("nan")])
def test_bad_percentile_is_a_config_error(percentile):
    with pytest.raises(ConfigError, match="percentile"):
        compute_amax(_hist(np.ones(10)), "percentile", percentile=percentile)


def test_histograms_compute_each_methods_amax_once_and_hand_out_copies(monkeypatch):
    from bench.quant import ptq

    rng = np.random.default_rng(0)
    hist = AbsHistogram()
    hist.update(rng.normal(0, 1, 10_000).astype(np.float32))
    hists = ptq.Histograms(None, lambda: iter(()), total=0, progress=False)
    hists._hists = {"a": hist}  # as if collected
    calls = []
    real = ptq.compute_amax
    monkeypatch.setattr(ptq, "compute_amax", lambda h, m, **k: calls.append(m) or real(h, m, **k))
    first = hists.amax(None, "mse", 99.99)
    first["a"] = -1.0  # a caller's edit stays its own
    again = hists.amax(None, "mse", 99.99)
    assert again["a"] == pytest.approx(real(hist, "mse", percentile=99.99)) and again["a"] > 0
    hists.amax(None, "percentile", 99.99)
    hists.amax(None, "percentile", 99.9)
    assert calls == ["mse", "percentile", "percentile"]
