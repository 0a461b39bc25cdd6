import numpy as np
import pytest

from bench.errors import ConfigError, ModelError
from bench.quant.histogram import AbsHistogram


def _centres(width, index):
    """Values at bin centres, far from any edge, so binning them is exact."""
    return (np.asarray(index) + 0.5) * width


def test_one_batch_matches_numpy_histogram_of_abs_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 50, 50)).astype(np.float32)
    hist = AbsHistogram(bins=512)
    hist.update(x)
    expected, edges = np.histogram(np.abs(x), bins=512, range=(0.0, float(np.abs(x).max())))
    assert hist.counts.sum() == pytest.approx(x.size) and hist.total == x.size
    # float32 vs float64 binning may move a value lying within rounding of an edge
    assert np.abs(hist.counts - expected).sum() <= 1e-4 * x.size
    np.testing.assert_allclose(hist.edges, edges)
    assert hist.amax_seen == float(np.abs(x).max())


def test_values_at_bin_centres_are_counted_exactly():
    rng = np.random.default_rng(1)
    index = rng.integers(0, 100, size=10_000)
    values = _centres(0.01, index) * rng.choice([-1.0, 1.0], size=index.size)
    hist = AbsHistogram(bins=100)
    hist.update(np.array([0.0, 1.0]))  # range [0, 1]: width 0.01
    hist.update(values)
    expected = np.bincount(index, minlength=100)
    expected[0] += 1  # the 0.0
    expected[99] += 1  # the 1.0 (the upper edge belongs to the last bin)
    np.testing.assert_allclose(hist.counts, expected, atol=1e-6)


def test_range_growth_merges_fine_bins_exactly():
    rng = np.random.default_rng(2)
    hist = AbsHistogram(bins=25, oversample=4)  # 100 fine bins
    hist.update(np.array([1.0]))
    hist.update(_centres(0.01, rng.integers(0, 100, size=5_000)))
    before = hist.fine_counts.copy()
    hist.update(np.array([2.5]))  # needs 2.5x: grows by the integer factor 3
    assert hist.fine_range == pytest.approx(3.0)
    merged = np.add.reduceat(np.pad(before, (0, 2)), np.arange(0, 102, 3))
    np.testing.assert_array_equal(hist.fine_counts[:34], merged)
    assert hist.fine_counts[83] == 1  # 2.5 / 0.03 = 83.3
    assert hist.fine_counts.sum() == before.sum() + 1 == hist.total
    assert hist.amax_seen == 2.5 and hist.edges[-1] == 2.5


def test_counts_after_growth_are_the_one_pass_histogram_within_the_smearing():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(200_000).astype(np.float32)
    hist = AbsHistogram(bins=2048)
    for chunk in np.array_split(np.sort(np.abs(x)), 40):  # ascending: grows again and again
        hist.update(-chunk)
    assert hist.fine_range > hist.amax_seen == float(np.abs(x).max())
    assert hist.total == hist.fine_counts.sum() == x.size
    assert hist.counts.sum() == pytest.approx(x.size)
    expected, _ = np.histogram(np.abs(x), bins=2048, range=(0.0, hist.amax_seen))
    # A bin gains or loses at most parts of the two fine bins straddling its edges.
    assert np.abs(hist.counts - expected).sum() < 0.02 * x.size
    np.testing.assert_allclose(np.cumsum(hist.counts), np.cumsum(expected), atol=x.size * 2e-4)


def test_all_zero_batches_stay_in_bin_zero_until_a_range_exists():
    hist = AbsHistogram(bins=16)
    hist.update(np.zeros((3, 5)))
    assert hist.fine_range == 0.0 and hist.amax_seen == 0.0
    assert hist.counts[0] == 15 and hist.counts.sum() == 15
    hist.update(np.array([0.0, 4.0]))
    assert hist.amax_seen == 4.0
    assert hist.counts[0] == 16 and hist.counts[15] == 1


def test_accepts_float16_float64_and_non_contiguous_input():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((64, 32)).astype(np.float32)
    reference = AbsHistogram(bins=64)
    reference.update(base.T.copy())
    for x in (base.T, base.astype(np.float64), base.astype(np.float16)):
        hist = AbsHistogram(bins=64)
        hist.update(x)
        assert hist.total == base.size
        assert np.abs(hist.counts - reference.counts).sum() <= 0.05 * base.size


def test_empty_batch_changes_nothing():
    hist = AbsHistogram(bins=8)
    hist.update(np.zeros((0, 3), dtype=np.float32))
    assert hist.total == 0 and hist.counts.sum() == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise_model_error_naming_the_tensor(bad):
    hist = AbsHistogram(bins=8, name="backbone.conv3_out")
    with pytest.raises(ModelError, match="backbone.conv3_out"):
        hist.update(np.array([1.0, bad, 2.0], dtype=np.float32))


@pytest.mark.parametrize(("bins", "oversample"), [(1, 8), (2048, 0)])
def test_bad_sizes_are_a_config_error(bins, oversample):
    with pytest.raises(ConfigError, match="bins"):
        AbsHistogram(bins=bins, oversample=oversample)
