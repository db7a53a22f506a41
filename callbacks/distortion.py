r"""The early distortion of :math:`\log_{10}|g|` (Liu et al. 2020, Fig. 2), measured from bucket counts on the host.

Everything here works on the rows of bucket counts that :class:`GradientHistogramMonitor` brings to
the host, with the buckets' log10 edges passed in (``lower``, ``upper``), so nothing depends on torch
or Lightning. Within a bucket the elements are taken as spread uniformly in :math:`\log_{10}|g|`: the
cumulative distribution function (CDF) of a histogram is then piecewise linear with a knot at every
edge, and its quantiles and the distances between two histograms follow from it exactly.

- :func:`quantiles`: quantiles of :math:`\log_{10}|g|`.
- :func:`distortion`: how far the distribution has moved down (towards zero) from a reference, in
  decades: the downward part of the 1-Wasserstein distance :func:`wasserstein_distance`.
- :class:`DistortionAlarm`: fires when the distortion from the first logged step reaches a threshold
  during the first steps, with a message that says what was seen and what to do.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_radam._checks import check_int, check_positive

__all__ = [
    "DEFAULT_EARLY_STEPS",
    "DEFAULT_QUANTILES",
    "DEFAULT_THRESHOLD",
    "QUANTILE_NAMES",
    "DistortionAlarm",
    "distortion",
    "quantiles",
    "wasserstein_distance",
]

#: The quantiles :func:`quantiles` returns by default (logged as ``p01``, ``p10``, ``p50``, ``p90``, ``p99``).
DEFAULT_QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)
#: Their names in the monitor's tags, ``{histogram tag}/p01`` ... ``/p99``.
QUANTILE_NAMES = tuple(f"p{round(100 * q):02d}" for q in DEFAULT_QUANTILES)
#: :class:`DistortionAlarm`'s threshold: decades of :func:`distortion` from the first logged step.
DEFAULT_THRESHOLD = 3.0
#: :class:`DistortionAlarm` judges the steps ``< early_steps`` only.
DEFAULT_EARLY_STEPS = 30


def _check_edges(lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(finite, lower, upper)``: the mask of buckets with finite edges, and those buckets' edges (float64)."""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    if lower.ndim != 1 or lower.shape != upper.shape:
        raise ValueError(
            f"Invalid lower, upper: expected 1-D arrays of one length, got shapes {lower.shape}, {upper.shape}"
        )
    finite = np.isfinite(lower) & np.isfinite(upper)
    index = np.flatnonzero(finite)
    lo, hi = lower[finite], upper[finite]
    if not np.all(lo < hi):
        k = index[np.argmin(lo < hi)]
        raise ValueError(f"Invalid lower, upper: bucket {k} has lower edge {lower[k]} >= upper edge {upper[k]}")
    if not np.all(hi[:-1] <= lo[1:]):
        k = index[np.argmin(hi[:-1] <= lo[1:])]
        raise ValueError(f"Invalid lower, upper: bucket {k} (upper edge {upper[k]}) overlaps the next finite bucket")
    return finite, lo, hi


def _check_counts(counts: Any, size: int, name: str) -> np.ndarray:
    array = np.asarray(counts)
    if array.ndim < 1 or array.shape[-1] != size:
        raise ValueError(f"Invalid {name}: expected a shape (..., {size}) of bucket counts, got {array.shape}")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Invalid {name}: expected real counts, got dtype {array.dtype}")
    if array.dtype.kind in "bu" or (array.dtype.kind == "i" and (array.size == 0 or array.min() >= 0)):
        return array.astype(np.float64)  # integers: finite, and one pass tells that none is negative
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array) & (array >= 0)):
        bad = array[~(np.isfinite(array) & (array >= 0))].flat[0]
        raise ValueError(f"Invalid {name}: expected finite counts >= 0, got {bad}")
    return array


def occupied_span(counts: Any) -> slice:
    """The buckets from the first to the last non-zero entry of the 1-D ``counts`` (``slice(0, 0)`` if none).

    Example:
        >>> occupied_span(np.array([0, 2, 0, 1, 0]))
        slice(1, 4, None)
    """
    occupied = np.flatnonzero(counts)
    return slice(int(occupied[0]), int(occupied[-1]) + 1) if occupied.size else slice(0, 0)


def _quantiles(counts: np.ndarray, lower: np.ndarray, upper: np.ndarray, q: np.ndarray) -> np.ndarray:
    """:func:`quantiles` of checked finite-bucket counts ``(..., K)``.

    In Python floats, a row at a time: a few microseconds for the hundred or so buckets a gradient occupies, where
    NumPy's calls on so few numbers would cost more than their arithmetic.
    """
    result = np.full(counts.shape[:-1] + (q.size,), np.nan)
    if counts.shape[-1] == 0:  # no bucket at all
        return result
    probabilities, edges = q.tolist(), list(zip(lower.tolist(), upper.tolist(), strict=True))
    last = counts.shape[-1] - 1
    flat = result.reshape(-1, q.size)
    for i, row in enumerate(counts.reshape(-1, counts.shape[-1]).tolist()):
        cumulative = list(itertools.accumulate(row))
        if not cumulative[-1] > 0:
            continue
        for j, probability in enumerate(probabilities):
            target = probability * cumulative[-1]
            # the first bucket whose cumulative count reaches the target (for q = 0: the first occupied bucket);
            # rounding can put q = 1 past the last cumulative count
            k = bisect.bisect_left(cumulative, target) if target > 0 else next(k for k, c in enumerate(row) if c > 0)
            k = min(k, last)
            fraction = min(max((target - (cumulative[k] - row[k])) / row[k], 0.0), 1.0)
            low, high = edges[k]
            flat[i, j] = low + fraction * (high - low)
    return result


def quantiles(counts: Any, lower: Any, upper: Any, q: Sequence[float] = DEFAULT_QUANTILES) -> np.ndarray:
    r"""Quantiles of :math:`\log_{10}|g|` from bucket counts, interpolating linearly within a bucket.

    The elements of a bucket are taken as spread uniformly between its log10 edges, so the quantile
    ``q`` of ``N`` elements lies in the bucket where the cumulative count reaches ``q N``, at the
    fraction of the bucket's width that the count still missing before it is of the bucket's count.
    Buckets whose edges are not finite (the monitor's inf and NaN buckets) are left out.

    Args:
        counts: bucket counts, shape ``(..., K)``: one histogram, or one per row; finite and ``>= 0``.
        lower: log10 of the buckets' lower edges, shape ``(K,)``; increasing, buckets not overlapping.
        upper: log10 of the buckets' upper edges, shape ``(K,)``.
        q: probabilities in ``[0, 1]`` (default: ``DEFAULT_QUANTILES``, ``(0.01, 0.1, 0.5, 0.9, 0.99)``).

    Returns:
        float64 array of shape ``(..., len(q))``: NaN for a histogram with no element in a finite bucket.

    Raises:
        ValueError: if ``lower`` and ``upper`` are not 1-D arrays of one length with ``lower < upper``
            and increasing, non-overlapping buckets; if ``counts`` does not end in ``K`` buckets or has a
            negative or non-finite count; if a probability in ``q`` is outside ``[0, 1]``.

    Example:
        >>> lower, upper = np.array([-3.0, -2.0, -1.0]), np.array([-2.0, -1.0, 0.0])
        >>> quantiles([0, 2, 2], lower, upper, q=(0.0, 0.25, 0.5, 1.0)).tolist()
        [-2.0, -1.5, -1.0, 0.0]
    """
    finite, lower, upper = _check_edges(lower, upper)
    counts = _check_counts(counts, finite.size, "counts")
    probabilities = np.asarray(q, dtype=np.float64)
    if probabilities.ndim != 1 or not np.all((probabilities >= 0.0) & (probabilities <= 1.0)):
        raise ValueError(f"Invalid q: {q!r} (expected a sequence of probabilities in [0, 1])")
    return _quantiles(counts[..., finite], lower, upper, probabilities)


def _parts(
    difference: np.ndarray, width: np.ndarray, gaps: np.ndarray | None, signs: tuple[int, ...] = (1, -1)
) -> np.ndarray:
    r"""The integrals of the positive parts of ``sign * (F - F_ref)`` over :math:`\log_{10}|g|` for each sign (leading
    axis), from ``difference``, :math:`F - F_{ref}` at the buckets' upper edges (0 below the first bucket, constant
    over the ``gaps`` after each bucket; None for none).

    Within a bucket ``d = sign * (F - F_ref)`` is linear from ``a`` (at its lower edge) to ``b``: the integral of its
    positive part is ``width * (max(a, 0) + max(b, 0)) / 2``, except where ``d`` changes sign, where it is a triangle,
    ``width * p^2 / (2 |b - a|)`` with ``p`` the positive end.
    """
    edges = np.concatenate([np.zeros_like(difference[..., :1]), difference], axis=-1)  # at the lower, then upper edges
    parts = []
    for sign in signs:
        d = edges if sign == 1 else -edges
        positive = d.clip(0.0)
        ends = positive[..., :-1] + positive[..., 1:]  # where d changes sign: the positive end (the other is 0)
        above = d > 0
        crossing = above[..., :-1] != above[..., 1:]
        height = np.divide(ends * ends, np.abs(np.diff(d, axis=-1)), out=ends, where=crossing)
        part = width * height / 2.0
        parts.append((part if gaps is None else part + positive[..., 1:] * gaps).sum(axis=-1))
    return np.stack(parts)


def _cdf(counts: np.ndarray) -> np.ndarray:
    """The normalised CDF of bucket counts ``(..., K)`` at the buckets' upper edges (NaN for an empty histogram)."""
    cdf = np.cumsum(counts, axis=-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cdf / cdf[..., -1:]


def _gaps(lower: np.ndarray, upper: np.ndarray) -> np.ndarray | None:
    """The gaps after each bucket (the last: 0), or None where there are none (IEEE buckets)."""
    gaps = np.append(lower[1:] - upper[:-1], 0.0)
    return gaps if gaps.any() else None


def _down_up(counts: np.ndarray, reference: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    r"""``[down, up]`` (leading axis) for checked finite-bucket counts: the integrals of the positive and negative
    parts of :math:`F - F_{ref}` over :math:`\log_{10}|g|`, NaN where either histogram is empty."""
    difference = _cdf(counts) - _cdf(reference)  # at each upper edge; 0 below the first bucket
    return _parts(difference, upper - lower, _gaps(lower, upper))


def _check_pair(counts: Any, reference: Any, lower: Any, upper: Any) -> np.ndarray:
    finite, lower, upper = _check_edges(lower, upper)
    counts = _check_counts(counts, finite.size, "counts")[..., finite]
    reference = _check_counts(reference, finite.size, "reference")[..., finite]
    return _down_up(counts, reference, lower, upper)


def distortion(counts: Any, reference: Any, lower: Any, upper: Any) -> np.ndarray:
    r"""How far the distribution of :math:`\log_{10}|g|` has moved down from ``reference``, in decades.

    With :math:`F` and :math:`F_{ref}` the normalised CDFs of the two histograms (piecewise linear in
    :math:`x = \log_{10}|g|`), the distortion is :math:`\int \max(F(x) - F_{ref}(x), 0)\,dx`: the part of
    the 1-Wasserstein distance (:func:`wasserstein_distance`) that moves mass towards zero. A whole
    distribution shifted down by ``d`` decades scores ``d``; shifted up, ``0``. Computed exactly from the
    counts (the integrand is piecewise linear between edges).

    Args:
        counts: bucket counts, shape ``(..., K)``; finite and ``>= 0``.
        reference: the reference's bucket counts, shape ``(K,)`` (or broadcastable against ``counts``).
        lower: log10 of the buckets' lower edges, shape ``(K,)``; increasing, buckets not overlapping.
        upper: log10 of the buckets' upper edges, shape ``(K,)``.

    Returns:
        float64 array of shape ``counts.shape[:-1]``: NaN where either histogram has no element in a
        finite bucket.

    Raises:
        ValueError: for edges, ``counts`` or ``reference`` as in :func:`quantiles`.

    Example:
        >>> lower, upper = np.arange(-8.0, 0.0), np.arange(-7.0, 1.0)  # one bucket per decade
        >>> float(distortion([0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1], lower, upper))
        2.0
        >>> float(distortion([0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0], lower, upper))
        0.0
    """
    return _check_pair(counts, reference, lower, upper)[0]


def wasserstein_distance(counts: Any, reference: Any, lower: Any, upper: Any) -> np.ndarray:
    r"""The 1-Wasserstein distance in decades between the distributions of :math:`\log_{10}|g|` of two histograms.

    :math:`\int |F(x) - F_{ref}(x)|\,dx` with the piecewise linear CDFs of :func:`distortion`, exact: the
    downward part (:func:`distortion`) plus the upward part.

    Args:
        counts: bucket counts, shape ``(..., K)``; finite and ``>= 0``.
        reference: the other histogram's bucket counts, shape ``(K,)`` (or broadcastable against ``counts``).
        lower: log10 of the buckets' lower edges, shape ``(K,)``; increasing, buckets not overlapping.
        upper: log10 of the buckets' upper edges, shape ``(K,)``.

    Returns:
        float64 array of shape ``counts.shape[:-1]``: NaN where either histogram is empty.

    Raises:
        ValueError: for edges, ``counts`` or ``reference`` as in :func:`quantiles`.

    Example:
        >>> lower, upper = np.arange(-8.0, 0.0), np.arange(-7.0, 1.0)
        >>> float(wasserstein_distance([0, 0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0], lower, upper))
        2.0
    """
    return _check_pair(counts, reference, lower, upper).sum(axis=0)


class DistortionAlarm:
    r"""Watch the first steps' gradient histograms for the early distortion of Adam without warmup.

    The first histogram given (normally step 0's, the gradients of the initial parameters, before any
    update) is the reference. Each later one gets a score, its :func:`distortion` from the reference:
    the decades by which :math:`\log_{10}|g|` has moved towards zero. The alarm fires once, at the first
    step ``< early_steps`` whose score reaches ``threshold``; later steps get a score but never fire,
    because a healthy run's gradients also shrink as it learns, only more slowly. The monitoring docs say
    how the defaults were chosen ("The distortion alarm: how its defaults were chosen").

    Args:
        lower: log10 of the buckets' lower edges, shape ``(K,)``; increasing, buckets not overlapping.
        upper: log10 of the buckets' upper edges, shape ``(K,)``.
        threshold: decades of distortion that fire the alarm, ``> 0`` (default: ``DEFAULT_THRESHOLD``, 3.0).
        early_steps: only steps ``< early_steps`` can fire it, ``>= 1`` (default: ``DEFAULT_EARLY_STEPS``, 30).

    Attributes:
        alarm_step: the step at which the alarm fired, or None.
        message: what was seen and what to do, set when the alarm fires (else None).

    Raises:
        ValueError: if the edges are invalid (see :func:`quantiles`), ``threshold`` is not a finite number
            ``> 0`` or ``early_steps`` is ``< 1``.
        TypeError: if ``threshold`` is not a real number or ``early_steps`` not an int.

    Example:
        >>> lower, upper = np.arange(-10.0, 0.0), np.arange(-9.0, 1.0)  # one bucket per decade
        >>> alarm = DistortionAlarm(lower, upper)
        >>> [alarm.update(step, np.roll([0, 0, 0, 0, 0, 0, 1, 1, 0, 0], -step)) for step in range(4)]
        [0.0, 1.0, 2.0, 3.0]
        >>> alarm.alarm_step
        3
        >>> print(alarm.message.split(". ")[0])
        Early distortion of the gradients at step 3: median |g| fell 3.0 decades in 3 steps (log10 -3.0 -> -6.0)
    """

    def __init__(
        self, lower: Any, upper: Any, threshold: float = DEFAULT_THRESHOLD, early_steps: int = DEFAULT_EARLY_STEPS
    ) -> None:
        self._finite, self._lower, self._upper = _check_edges(lower, upper)
        self._all_finite = bool(self._finite.all())
        self.threshold = check_positive("threshold", threshold)
        self.early_steps = check_int("early_steps", early_steps, minimum=1)
        self.alarm_step: int | None = None
        self.message: str | None = None
        self._reference: tuple[int, np.ndarray] | None = None  # (step, counts in the finite buckets)
        self._width, self._gaps = self._upper - self._lower, _gaps(self._lower, self._upper)
        self._reference_cdf = np.zeros(0)  # the reference's normalised CDF at the upper edges
        self._reference_span = slice(0, 0)  # the buckets it occupies

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold:g}, early_steps={self.early_steps})"

    @property
    def reference_step(self) -> int | None:
        """The step of the reference histogram, or None before the first non-empty one."""
        return None if self._reference is None else self._reference[0]

    def update(self, step: int, counts: Any) -> float:
        """Score one logged step's histogram; fire the alarm if it is early and reaches the threshold.

        Args:
            step: the optimizer step of the histogram (0 for the gradients of the initial parameters).
            counts: its bucket counts, shape ``(K,)``.

        Returns:
            The distortion from the reference in decades: 0.0 for the reference itself, NaN for a histogram
            with no finite non-zero element, and for any histogram before a reference was found (a first
            non-empty histogram at a step ``>= early_steps`` is no reference to judge the early phase by).
            When the alarm fires, ``alarm_step`` becomes ``step`` and ``message`` is set.

        Raises:
            ValueError: if ``counts`` has not ``K`` buckets, or a negative or non-finite count.
        """
        row = _check_counts(counts, self._finite.size, "counts")
        if row.ndim != 1:
            raise ValueError(f"Invalid counts: expected one histogram of shape ({self._finite.size},), got {row.shape}")
        row = row if self._all_finite else row[self._finite]
        if not row.sum() > 0:
            return float("nan")
        if self._reference is None:
            if step >= self.early_steps:
                return float("nan")
            self._set_reference(int(step), row)
            return 0.0
        reference_step, reference = self._reference
        # the CDFs are equal (0, then 1) outside the buckets that either histogram occupies: only those are integrated
        occupied, known = occupied_span(row), self._reference_span
        span = slice(min(occupied.start, known.start), max(occupied.stop, known.stop))
        difference = _cdf(row[span]) - self._reference_cdf[span]
        gaps = None if self._gaps is None else self._gaps[span]
        score = float(_parts(difference, self._width[span], gaps, signs=(1,))[0])
        if self.alarm_step is None and step < self.early_steps and score >= self.threshold:
            self.alarm_step = int(step)
            self.message = self._message(reference_step, reference, self.alarm_step, row, score)
        return score

    def _set_reference(self, step: int, row: np.ndarray) -> None:
        self._reference = (step, row)
        self._reference_cdf, self._reference_span = _cdf(row), occupied_span(row)

    def _message(self, reference_step: int, reference: np.ndarray, step: int, row: np.ndarray, score: float) -> str:
        median = _quantiles(np.stack([reference, row]), self._lower, self._upper, np.array([0.5]))[:, 0]
        fall = median[0] - median[1]
        return (
            f"Early distortion of the gradients at step {step}: median |g| {'fell' if fall >= 0 else 'rose'}"
            f" {abs(fall):.1f} decades in {step - reference_step} steps"
            f" (log10 {median[0]:.1f} -> {median[1]:.1f})."
            f" The distribution of log10|g| moved {score:.1f} decades towards zero since step {reference_step}"
            f" (alarm threshold {self.threshold:g} decades within the first {self.early_steps} steps). This is the"
            " early distortion of Liu et al. 2020 (Fig. 2), typical of runs that need warmup: the adaptive learning"
            " rate is estimated from too few gradients, the first updates are too large, and such runs often stall"
            " near their initial loss. What to do: train with RAdam (lightning_radam.RAdam, or RAdamMixin), or add a"
            ' warmup: RAdamMixin\'s hparam warmup="untuned_linear" (2 / (1 - beta2) steps), or any linear warmup of'
            " the learning rate."
        )

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to behave as an uninterrupted one: the reference, and whether the alarm fired.

        Returns:
            A dict of plain Python values (ints, floats, strings, lists, None), as checkpoints store them.
        """
        return {
            "reference_step": self.reference_step,
            "reference": None if self._reference is None else self._reference[1].tolist(),
            "alarm_step": self.alarm_step,
            "message": self.message,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Args:
            state_dict: a dict from :meth:`state_dict` of an alarm over the same buckets.

        Raises:
            ValueError: if its reference does not have as many finite buckets as this alarm's edges.
        """
        self._reference = None
        if state_dict.get("reference") is not None:
            reference = np.asarray(state_dict["reference"], dtype=np.float64)
            if reference.shape != self._lower.shape:
                raise ValueError(
                    f"Invalid state_dict: a reference of {reference.size} buckets, expected {self._lower.size}"
                    " (the finite buckets of this alarm's edges)"
                )
            self._set_reference(int(state_dict["reference_step"]), reference)
        self.alarm_step = state_dict.get("alarm_step")
        self.message = state_dict.get("message")
