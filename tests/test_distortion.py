"""Quantiles, distortion score and alarm from bucket counts (callbacks/distortion.py), against hand-computed values."""

import io
import math

import numpy as np
import pytest
import torch
from helpers import Model, known_gradients, make_trainer
from scipy.stats import norm
from test_examples import load_example

from lightning_radam.callbacks import GradientHistogramMonitor, bucket_edges, log2_bucket_counts
from lightning_radam.callbacks.distortion import (
    DEFAULT_EARLY_STEPS,
    DEFAULT_THRESHOLD,
    DistortionAlarm,
    distortion,
    quantiles,
    wasserstein_distance,
)

LOWER, UPPER = (np.log10(edges) for edges in bucket_edges())  # the monitor's 1024 buckets (1020-1023: inf, NaN)
K = LOWER.size
DECADES = np.arange(-10.0, 0.0), np.arange(-9.0, 1.0)  # ten buckets, one per decade: [-10, -9), ..., [-1, 0)


def decade_counts(**mass: float) -> np.ndarray:
    """Counts over the DECADES buckets, e.g. decade_counts(b4=1, b6=1): bucket i covers [i - 10, i - 9)."""
    counts = np.zeros(10)
    for name, value in mass.items():
        counts[int(name[1:])] = value
    return counts


def lognormal_counts(median: float, sigma: float = 0.7, n: float = 1e6) -> np.ndarray:
    """Integer counts over the monitor's buckets of n elements with log10|g| ~ N(median, sigma^2)."""
    finite = np.isfinite(UPPER)
    counts = np.zeros(K, dtype=np.int64)
    mass = norm.cdf(UPPER[finite], median, sigma) - norm.cdf(LOWER[finite], median, sigma)
    counts[finite] = np.round(n * mass).astype(np.int64)
    return counts


# ----------------------------------------------------------------------------------------------- quantiles
def spread_in_buckets(counts: dict[int, int]) -> np.ndarray:
    """log10 values placed evenly inside the monitor's buckets: c values at the centres of c equal slices."""
    values = [LOWER[k] + (np.arange(c) + 0.5) / c * (UPPER[k] - LOWER[k]) for k, c in sorted(counts.items()) if c > 0]
    return np.concatenate(values)


@pytest.mark.parametrize(
    ("occupied", "q"),
    [
        # N = 20 values; numpy's "hazen" quantile sits at rank N q - 1/2, chosen inside one bucket
        ({400: 4, 401: 10, 420: 6}, [0.025, 0.1, 0.5, 0.9, 0.975]),
        ({508: 20}, [0.025, 0.3, 0.5, 0.8, 0.975]),  # a single bucket
        ({3: 5, 4: 5, 1000: 10}, [0.025, 0.2, 0.35, 0.5 + 0.025, 0.975]),  # subnormal buckets and near float32's max
        ({100: 1, 600: 18, 700: 1}, [0.025, 0.1, 0.5, 0.9, 0.975]),
    ],
)
def test_quantiles_equal_numpy_on_values_binned_by_hand(occupied, q):
    values = spread_in_buckets(occupied)
    counts = np.zeros(K, dtype=np.int64)
    counts[list(occupied)] = list(occupied.values())
    # the buckets are the monitor's: its own binning of these magnitudes gives the same counts
    binned = log2_bucket_counts(torch.tensor(10.0**values, dtype=torch.float32)).numpy()
    np.testing.assert_array_equal(binned, counts)
    expected = np.quantile(values, q, method="hazen")
    np.testing.assert_allclose(quantiles(counts, LOWER, UPPER, q), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("value", [1.0, 1.25, 1.75, 0.5, 2.0**-126, 2.0**100])
def test_quantiles_of_an_element_at_a_bucket_edge(value):
    counts = log2_bucket_counts(torch.tensor([value, -value])).numpy()  # a bucket holds [lower, upper)
    k = int(np.flatnonzero(counts)[0])
    assert LOWER[k] == np.log10(value)
    p0, p50, p100 = quantiles(counts, LOWER, UPPER, (0.0, 0.5, 1.0))
    assert p0 == LOWER[k]  # the element's own log10, exactly
    assert (p50, p100) == pytest.approx(((LOWER[k] + UPPER[k]) / 2, UPPER[k]), abs=1e-12)


@pytest.mark.parametrize("k", [0, 4, 508, 1019])
@pytest.mark.parametrize("q", [0.0, 0.01, 0.5, 0.99, 1.0])
def test_quantiles_of_a_single_bucket_interpolate_linearly(k, q):
    counts = np.zeros(K, dtype=np.int64)
    counts[k] = 7
    expected = LOWER[k] + q * (UPPER[k] - LOWER[k])
    assert quantiles(counts, LOWER, UPPER, (q,))[0] == pytest.approx(expected, abs=1e-12)


def test_quantiles_of_rows_nan_for_an_empty_row_and_nonfinite_buckets_left_out():
    rows = np.zeros((3, K), dtype=np.int64)
    rows[0, 508] = 4
    rows[2, 512] = 4
    rows[1, 1020:] = 9  # inf and NaN only: no finite element
    rows[2, 1023] = 1000
    result = quantiles(rows, LOWER, UPPER)
    assert result.shape == (3, 5)
    assert np.isnan(result[1]).all()
    np.testing.assert_allclose(result[2] - result[0], math.log10(2.0), atol=1e-12)  # 4 buckets = one octave


def test_quantiles_default_probabilities_on_decades():
    # 100 elements: 10 in [-4, -3), 80 in [-3, -2), 10 in [-2, -1)
    counts = decade_counts(b6=10, b7=80, b8=10)
    assert quantiles(counts, *DECADES).tolist() == pytest.approx([-3.9, -3.0, -2.5, -2.0, -1.1])


# -------------------------------------------------------------------------------------------- distortion
@pytest.mark.parametrize(
    ("counts", "reference", "down", "w1"),
    [
        pytest.param(decade_counts(b6=1, b7=1), decade_counts(b6=1, b7=1), 0.0, 0.0, id="same"),
        pytest.param(decade_counts(b3=5, b4=5), decade_counts(b6=1, b7=1), 3.0, 3.0, id="all_down_3"),
        pytest.param(decade_counts(b8=1, b9=1), decade_counts(b6=1, b7=1), 0.0, 2.0, id="all_up_2"),
        # half the mass 2 decades down: 0.5 * 2
        pytest.param(decade_counts(b4=1, b6=1), decade_counts(b6=2), 1.0, 1.0, id="half_down_2"),
        # spread to both sides: the difference of the CDFs changes sign inside bucket 5 (two triangles of 1/8)
        pytest.param(decade_counts(b4=1, b6=1), decade_counts(b5=1), 0.375, 0.75, id="spread_both_ways"),
        pytest.param(decade_counts(b0=1), decade_counts(b9=3), 9.0, 9.0, id="far"),
    ],
)
def test_distortion_and_wasserstein_against_hand_computed_values(counts, reference, down, w1):
    assert distortion(counts, reference, *DECADES) == pytest.approx(down, abs=1e-12)
    assert wasserstein_distance(counts, reference, *DECADES) == pytest.approx(w1, abs=1e-12)


@pytest.mark.parametrize("octaves", [-12, -1, 0, 3, 40])
def test_distortion_of_a_histogram_moved_by_whole_octaves_is_the_shift(octaves):
    reference = lognormal_counts(-3.1)
    moved = np.zeros_like(reference)
    finite = slice(100, 900)  # well inside the finite buckets, where the mass is
    moved[finite] = np.roll(reference[finite], 4 * octaves)  # 4 buckets per octave: log10|g| moves by log10(2)
    shift = octaves * math.log10(2.0)
    assert distortion(reference, moved, LOWER, UPPER) == pytest.approx(max(shift, 0.0), abs=1e-9)
    assert wasserstein_distance(reference, moved, LOWER, UPPER) == pytest.approx(abs(shift), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wasserstein_equals_the_integral_of_the_cdfs_on_a_fine_grid(seed):
    rng = np.random.default_rng(seed)
    a, b = np.zeros(K), np.zeros(K)
    a[rng.integers(480, 540, 30)] = rng.integers(1, 100, 30)
    b[rng.integers(470, 530, 30)] = rng.integers(1, 100, 30)
    x = np.linspace(LOWER[460], UPPER[560], 2_000_001)

    def cdf(counts):
        knots = np.append(LOWER[:1020], UPPER[1019])
        return np.interp(x, knots, np.append(0.0, np.cumsum(counts[:1020])) / counts.sum())

    gap = cdf(a) - cdf(b)
    dx = x[1] - x[0]
    assert distortion(a, b, LOWER, UPPER) == pytest.approx(np.clip(gap, 0, None).sum() * dx, rel=1e-5)
    assert wasserstein_distance(a, b, LOWER, UPPER) == pytest.approx(np.abs(gap).sum() * dx, rel=1e-5)


def test_distortion_of_rows_against_one_reference_nan_where_empty():
    rows = np.stack([lognormal_counts(m) for m in (-3.0, -4.0, -5.0)] + [np.zeros(K, dtype=np.int64)])
    scores = distortion(rows, rows[0], LOWER, UPPER)
    np.testing.assert_allclose(scores[:3], [0.0, 1.0, 2.0], atol=2e-3)
    assert np.isnan(scores[3])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantiles(np.ones(9), *DECADES), r"Invalid counts: expected a shape \(\.\.\., 10\)"),
        (lambda: quantiles(-decade_counts(b1=1), *DECADES), "Invalid counts: expected finite counts >= 0, got -1.0"),
        (lambda: quantiles(decade_counts(b1=np.nan), *DECADES), "Invalid counts: .* got nan"),
        (lambda: quantiles(np.array(["a"] * 10), *DECADES), "Invalid counts: expected real counts, got dtype <U1"),
        (lambda: quantiles(decade_counts(b1=1), *DECADES, q=(0.5, 1.5)), r"Invalid q: \(0.5, 1.5\)"),
        (lambda: quantiles(decade_counts(b1=1), *DECADES, q=-0.1), r"Invalid q: -0.1"),
        (lambda: quantiles(np.ones(3), [0.0, 1.0, 2.0], [1.0, 2.0]), r"Invalid lower, upper: .* \(3,\), \(2,\)"),
        (lambda: quantiles(np.ones(2), [0.0, 1.0], [1.0, 1.0]), "bucket 1 has lower edge 1.0 >= upper edge 1.0"),
        (lambda: quantiles(np.ones(2), [0.0, 0.5], [1.0, 2.0]), r"bucket 0 \(upper edge 1.0\) overlaps"),
        (lambda: distortion(np.ones(10), np.ones(9), *DECADES), r"Invalid reference: expected a shape \(\.\.\., 10\)"),
        (lambda: wasserstein_distance(np.ones(10), -np.ones(10), *DECADES), "Invalid reference: .* got -1.0"),
    ],
)
def test_bad_input_names_the_argument_and_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------------- alarm
def feed(alarm: DistortionAlarm, medians: dict[int, float]) -> dict[int, float]:
    """Scores of a sequence of log-normal histograms, {step: median log10|g|}, fed in step order."""
    return {step: alarm.update(step, lognormal_counts(median)) for step, median in sorted(medians.items())}


COLLAPSE = [-3.1, -3.6, -4.2, -4.6, -5.0, -5.5, -5.7, -5.8, -6.0, -6.3, -6.5, -6.6, -6.7, -6.8]  # Adam, no warmup
SLOW = {step: -3.1 - step / 600 for step in range(600)}  # a converging run: one decade over 600 steps


@pytest.mark.parametrize(
    ("medians", "kwargs", "step", "words"),
    [
        pytest.param(
            dict(enumerate(COLLAPSE)),
            {},
            9,
            ["at step 9: median |g| fell 3.2 decades in 9 steps (log10 -3.1 -> -6.3)", "moved 3.2 decades"],
            id="collapse",
        ),
        pytest.param(
            dict(enumerate(COLLAPSE)),
            {"threshold": 3.55},
            12,
            ["median |g| fell 3.6 decades in 12 steps (log10 -3.1 -> -6.7)", "threshold 3.55 decades"],
            id="collapse_threshold",
        ),
        pytest.param(
            {step: m for step, m in enumerate(COLLAPSE) if step % 4 == 0},
            {},
            12,
            ["at step 12: median |g| fell 3.6 decades in 12 steps"],
            id="logged_every_4_steps",
        ),
        pytest.param(
            {step + 3: m for step, m in enumerate(COLLAPSE)},
            {},
            12,
            ["in 9 steps (log10 -3.1 -> -6.3)", "since step 3"],
            id="first_logged_step_3",
        ),
        pytest.param(
            {step: -3.0 - 0.5 * step for step in range(10)},
            {"threshold": 0.9, "early_steps": 3},
            2,
            ["fell 1.0 decades in 2 steps (log10 -3.0 -> -4.0)", "within the first 3 steps"],
            id="custom",
        ),
    ],
)
def test_alarm_fires_at_the_first_early_step_over_the_threshold_with_the_numbers(medians, kwargs, step, words):
    alarm = DistortionAlarm(LOWER, UPPER, **kwargs)
    scores = feed(alarm, medians)
    assert alarm.alarm_step == step
    assert scores[step] >= alarm.threshold > max(s for t, s in scores.items() if t < step)
    for text in words:
        assert text in alarm.message
    for text in ("Liu et al. 2020 (Fig. 2)", "need warmup", "lightning_radam.RAdam", 'warmup="untuned_linear"'):
        assert text in alarm.message


@pytest.mark.parametrize(
    ("medians", "kwargs"),
    [
        pytest.param(SLOW, {}, id="one_decade_in_600_steps"),
        pytest.param({step: -3.1 - 5 * step / 600 for step in range(600)}, {}, id="five_decades_in_600_steps"),
        pytest.param({step: -3.1 + step / 100 for step in range(100)}, {"threshold": 0.5}, id="growing"),
        # a collapse after the early phase (as Adam-2k's after its v-only steps): scored, never fired
        pytest.param({step: -3.1 - 0.5 * max(0, step - 30) for step in range(60)}, {}, id="collapse_at_step_30"),
        pytest.param({step: -3.1 - 0.5 * max(0, step - 9) for step in range(40)}, {"early_steps": 10}, id="custom"),
    ],
)
def test_alarm_never_fires_on_slow_declines_growth_or_after_the_early_phase(medians, kwargs):
    alarm = DistortionAlarm(LOWER, UPPER, **kwargs)
    scores = feed(alarm, medians)
    assert alarm.alarm_step is None
    assert alarm.message is None
    last = max(medians)
    assert scores[last] == pytest.approx(max(0.0, medians[0] - medians[last]), abs=2e-3)  # still scored


@pytest.mark.parametrize(
    ("rows", "expected_scores", "reference_step"),
    [
        pytest.param({0: None, 1: -3.0, 2: -4.0}, [math.nan, 0.0, 1.0], 1, id="empty_first_histogram"),
        pytest.param({30: -3.0, 31: -7.0}, [math.nan, math.nan], None, id="first_after_the_early_phase"),
        pytest.param({0: -3.0, 5: None, 6: -3.5}, [0.0, math.nan, 0.5], 0, id="empty_later"),
    ],
)
def test_alarm_reference_is_the_first_nonempty_early_histogram(rows, expected_scores, reference_step):
    alarm = DistortionAlarm(LOWER, UPPER)
    empty = np.zeros(K, dtype=np.int64)
    empty[1020:] = 5  # inf and NaN only
    scores = [alarm.update(s, empty if m is None else lognormal_counts(m)) for s, m in rows.items()]
    np.testing.assert_allclose(scores, expected_scores, atol=2e-3)
    assert alarm.reference_step == reference_step
    assert alarm.alarm_step is None


def through_a_checkpoint(state: dict) -> dict:
    """state as it comes back from a checkpoint file loaded the safe way (torch.load(weights_only=True))."""
    buffer = io.BytesIO()
    torch.save({"callbacks": {"alarm": state}}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["callbacks"]["alarm"]


@pytest.mark.parametrize("split", [0, 1, 5, 10, 13])  # before any step, after the reference, before and after firing
def test_alarm_state_round_trip_resumes_as_an_uninterrupted_run(split):
    medians = dict(enumerate(COLLAPSE + [-6.9] * 30))
    uninterrupted = DistortionAlarm(LOWER, UPPER)
    expected = feed(uninterrupted, medians)
    first = DistortionAlarm(LOWER, UPPER)
    scores = feed(first, {s: m for s, m in medians.items() if s < split})
    resumed = DistortionAlarm(LOWER, UPPER)
    resumed.load_state_dict(through_a_checkpoint(first.state_dict()))
    scores |= feed(resumed, {s: m for s, m in medians.items() if s >= split})
    assert scores == expected
    assert (resumed.alarm_step, resumed.message, resumed.reference_step) == (
        uninterrupted.alarm_step,
        uninterrupted.message,
        uninterrupted.reference_step,
    )
    assert resumed.state_dict() == uninterrupted.state_dict()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: DistortionAlarm(LOWER, UPPER, threshold=0.0), ValueError, r"Invalid threshold: 0.0 \(expected 0 <"),
        (lambda: DistortionAlarm(LOWER, UPPER, threshold=-1), ValueError, "Invalid threshold: -1"),
        (lambda: DistortionAlarm(LOWER, UPPER, threshold=math.nan), ValueError, "Invalid threshold: nan"),
        (lambda: DistortionAlarm(LOWER, UPPER, threshold=math.inf), ValueError, "Invalid threshold: inf"),
        (
            lambda: DistortionAlarm(LOWER, UPPER, threshold="3"),
            TypeError,
            "Invalid threshold: expected a number, got '3'",
        ),
        (
            lambda: DistortionAlarm(LOWER, UPPER, early_steps=0),
            ValueError,
            r"Invalid early_steps: 0 \(expected early_steps >= 1\)",
        ),
        (
            lambda: DistortionAlarm(LOWER, UPPER, early_steps=2.5),
            TypeError,
            "Invalid early_steps: expected an int, got 2.5",
        ),
        (
            lambda: DistortionAlarm(LOWER, UPPER, early_steps=True),
            TypeError,
            "Invalid early_steps: expected an int, got True",
        ),
        (lambda: DistortionAlarm(LOWER[:5], UPPER), ValueError, r"Invalid lower, upper: .* \(5,\), \(1024,\)"),
        (
            lambda: DistortionAlarm(LOWER, UPPER).update(0, np.ones(1023)),
            ValueError,
            r"Invalid counts: .* got \(1023,\)",
        ),
        (
            lambda: DistortionAlarm(LOWER, UPPER).update(0, np.ones((2, K))),
            ValueError,
            r"expected one histogram .* got \(2, 1024\)",
        ),
        (
            lambda: DistortionAlarm(LOWER, UPPER).load_state_dict({"reference_step": 0, "reference": [1.0] * 5}),
            ValueError,
            "Invalid state_dict: a reference of 5 buckets, expected 1020",
        ),
    ],
)
def test_alarm_bad_input_names_the_argument_and_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_alarm_defaults_and_repr():
    alarm = DistortionAlarm(LOWER, UPPER)
    assert (alarm.threshold, alarm.early_steps) == (DEFAULT_THRESHOLD, DEFAULT_EARLY_STEPS) == (3.0, 30)
    assert repr(alarm) == "DistortionAlarm(threshold=3, early_steps=30)"
    assert (alarm.alarm_step, alarm.message, alarm.reference_step) == (None, None, None)


# ------------------------------------------------------------------------------------ the measuring script
def test_distortion_alarm_example_reads_the_monitors_counts_back_exactly(tmp_path):
    """examples/distortion_alarm.py replays event files: each step's 1024 counts come back as the monitor counted."""
    model = Model(gradients=known_gradients(finite_only=True))
    trainer = make_trainer(tmp_path, [GradientHistogramMonitor()], max_steps=3)
    trainer.fit(model)
    everything = torch.cat([g.reshape(-1) for g in model.gradients.values()])
    expected = log2_bucket_counts(everything).numpy()
    expected[0] -= int((everything == 0).sum())  # the monitor counts exact zeros apart
    example = load_example("distortion_alarm")
    steps, counts, _ = example.read_run(tmp_path / "version_0")
    assert steps.tolist() == [0, 1, 2]
    for row in counts:
        np.testing.assert_array_equal(row, expected)
    run = example.Run("test", "sgd", 0, steps, counts, trained=True, outcome="")
    alarm, early_max = example.replay(run, threshold=3.0, early_steps=30)
    assert (alarm.alarm_step, alarm.reference_step, early_max) == (None, 0, 0.0)  # the gradients never change
