r"""The variance rectification of RAdam, as pure functions (Liu et al., ICLR 2020, arXiv:1908.03265).

Adam's adaptive learning rate :math:`l_t = \sqrt{(1-\beta_2^t)/v_t}` is estimated from very few
gradients early in training. Approximating the exponential moving average by a simple moving
average of length :math:`\rho_t`, :math:`l_t^2` follows a scaled inverse chi-square distribution
with :math:`\rho_t` degrees of freedom. The variance of :math:`l_t` is finite for
:math:`\rho_t > 2` and decreases towards its minimum at :math:`\rho_\infty`; its first-order
approximation :math:`\rho / (2(\rho-2)(\rho-4))`, from which the rectification term is built, is
defined only for :math:`\rho_t > 4` (the paper's "intractable" region is :math:`\rho_t \le 4`):

.. math::
    \rho_\infty = \frac{2}{1-\beta_2} - 1, \qquad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t}, \qquad
    r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}.

Every function works in float64 on Python numbers (returning ``float``), on NumPy arrays
(returning arrays) and on tensors (returning float64 tensors on the same device). Each formula is written
once, over the operations it needs: a single number is computed with Python's ``math`` (microseconds, as
the optimizer and the monitors need on every step), arrays and tensors with torch. :func:`rho_t` is exact to
float64 round-off for every ``beta2``: near 1, where the textbook form subtracts two numbers of about
:math:`2/(1-\beta_2)`, it is summed as a series in :math:`t \log\beta_2` instead. Degenerate
inputs never produce ``inf`` or ``NaN``: a step may be ``inf``, where :func:`rho_t` is its limit
:math:`\rho_\infty` and :func:`r_t` its limit 1; :func:`r_t` is ``0`` wherever it is undefined
(:math:`\rho_t \le 4`, which covers every step when :math:`\beta_2 \le 0.6`);
:func:`variance_adaptive_lr` rejects :math:`\rho \le 2` (where the variance is infinite) and
:func:`variance_adaptive_lr_first_order` rejects :math:`\rho \le 4`, with a ``ValueError``.

Example:
    >>> from lightning_radam.rectification import rho_inf, rho_t, r_t, first_rectified_step
    >>> round(rho_inf(0.999), 9)
    1999.0
    >>> round(rho_t(6, 0.999), 4)
    5.9942
    >>> round(r_t(6, 0.999), 6)
    0.025821
    >>> first_rectified_step(0.999), first_rectified_step(0.999, threshold=4.0)
    (6, 5)
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
import torch

from lightning_radam._checks import check_beta2, check_threshold, real, shown_repr

__all__ = [
    "rho_inf",
    "rho_t",
    "r_t",
    "variance_adaptive_lr",
    "variance_adaptive_lr_first_order",
    "first_rectified_step",
]

Number = TypeVar("Number", float, np.ndarray, torch.Tensor)

# Below this rho the exact variance is evaluated with lgamma directly; above it, with the Stirling
# series of the lgamma difference, which avoids the cancellation between two large lgamma values.
_STIRLING_MIN_RHO = 20.0


class _Math:
    """The operations of the formulas below on one Python float, under torch's names (``torch`` itself is the other
    backend): ``where`` picks a branch, both of which the formulas keep finite."""

    exp, expm1, log, lgamma, sqrt, isfinite = (
        staticmethod(f) for f in (math.exp, math.expm1, math.log, math.lgamma, math.sqrt, math.isfinite)
    )

    @staticmethod
    def where(condition: bool, a: float, b: float) -> float:
        return a if condition else b

    @staticmethod
    def full_like(x: float, value: float) -> float:
        return value

    @staticmethod
    def zeros_like(x: float) -> float:
        return 0.0

    @staticmethod
    def ones_like(x: float) -> float:
        return 1.0

    @staticmethod
    def nan_to_num(x: float, nan: float) -> float:
        return nan if math.isnan(x) else x

    @staticmethod
    def floor(x: float) -> float:
        return x if math.isinf(x) or math.isnan(x) else float(math.floor(x))


def _backend(x: Any) -> Any:
    """The operations for ``x``: :class:`_Math` for a Python float, else ``torch``."""
    return _Math if isinstance(x, float) else torch


def _as_float64(x: Any, name: str) -> tuple[Any, str]:
    """Return ``(x as float64, kind)`` where kind is ``"scalar"`` (a Python float), ``"numpy"`` or ``"torch"``
    (float64 tensors).

    Python ints beyond the float range become +-inf: the nearest float64, and for a step the limit ``t -> inf``.
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"Invalid {name}: expected a real tensor, got dtype {x.dtype}")
        return x.to(torch.float64), "torch"
    if isinstance(x, (np.ndarray, list, tuple)):
        try:
            array = np.asarray(x)
        except ValueError:  # a ragged nesting
            raise TypeError(f"Invalid {name}: expected real numbers, got {shown_repr(x)}") from None
        if array.dtype == object:  # Python ints beyond int64, mixed types
            array = np.array([real(v, f"Invalid {name}", "real numbers") for v in array.flat]).reshape(array.shape)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"Invalid {name}: expected real numbers, got an array of dtype {array.dtype}")
        return torch.as_tensor(array.astype(np.float64), device="cpu"), "numpy"
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"Invalid {name}: expected a number, array or tensor, got {type(x).__name__} {shown_repr(x)}")
    return real(x, f"Invalid {name}"), "scalar"


def _back(x: Any, kind: str) -> Any:
    return x.numpy() if kind == "numpy" else x


def _check_all(x: Any, valid: Any, message: str) -> None:
    """Raise ``ValueError(message.format(bad))`` for the first element ``bad`` of ``x`` (a Python float or a tensor)
    where ``valid`` (a bool, or a bool tensor of ``x``'s shape) is false."""
    if isinstance(valid, bool):
        bad = None if valid else x
    else:
        bad = None if bool(valid.all()) else x[~valid].flatten()[0].item()
    if bad is not None:
        raise ValueError(message.format(bad))


def _check_steps(t: Any) -> None:
    _check_all(t, (t >= 1) & (t == _backend(t).floor(t)), "Invalid step: {} (steps are integers >= 1)")


def rho_inf(beta2: float) -> float:
    r"""Maximum length of the approximated simple moving average, :math:`\rho_\infty = 2/(1-\beta_2) - 1`.

    Args:
        beta2: decay rate of the second moment, in ``[0, 1)``.

    Raises:
        ValueError: if ``beta2`` is outside ``[0, 1)``.

    Example:
        >>> round(rho_inf(0.98), 9)
        99.0
    """
    beta2 = check_beta2(beta2)
    return 2.0 / (1.0 - beta2) - 1.0


def _bernoulli_series() -> tuple[float, ...]:
    """B_2k / (2k)! for k = 1..11: the coefficients of x^2k in x / (e^x - 1) (B_n from sum_k C(n+1, k) B_k = 0)."""
    bernoulli = [Fraction(1)]
    for n in range(1, 23):
        bernoulli.append(-sum((math.comb(n + 1, k) * bernoulli[k] for k in range(n)), Fraction(0)) / (n + 1))
    return tuple(float(bernoulli[2 * k] / math.factorial(2 * k)) for k in range(1, 12))


_PSI = _bernoulli_series()  # x / (e^x - 1) = 1 - x/2 + sum_k _PSI[k-1] x^2k, to float64 round-off for |x| <= 1


def _rho_t(t: Any, beta2: float) -> Any:
    # With L = -log(beta2) and x = t L: rho_t = 2 / (1 - beta2) - 1 - (2 / L) x / (e^x - 1). Where x >= 1 it is
    # computed so (_rho_t_direct). Below, its two large terms (about 2 / (1 - beta2) each for beta2 near 1) would
    # cancel, and a series is summed instead (_rho_t_series). One number takes its branch; a tensor takes both.
    xp = _backend(t)
    if beta2 == 0.0:
        return xp.ones_like(t)  # beta2^t = 0 for t >= 1, so rho_t = rho_inf = 1
    x = t * -math.log(beta2)
    small = x < 1.0
    if small is False:
        return _rho_t_direct(xp, t, x, beta2)
    if small is True:
        return _rho_t_series(xp, t, x, beta2)
    series = _rho_t_series(xp, t, xp.where(small, x, xp.zeros_like(x)), beta2)  # the unused branch kept finite
    return xp.where(small, series, _rho_t_direct(xp, t, x, beta2))


def _rho_t_direct(xp: Any, t: Any, x: Any, beta2: float) -> Any:
    """rho_inf - 2 t beta2^t / (1 - beta2^t), with beta2^t = e^-x and 1 - beta2^t = -expm1(-x)."""
    # t beta2^t, multiplied before the 2 so that t >= 2^1023 does not overflow (2 is exact: the order does not
    # change the rounding). At t = inf, beta2^t is 0 and inf * 0 NaN: its limit 0 gives the limit rho_inf.
    t_beta2_t = xp.nan_to_num(t * xp.exp(-x), nan=0.0)
    return rho_inf(beta2) - 2.0 * t_beta2_t / -xp.expm1(-x)


def _rho_t_series(xp: Any, t: Any, x: Any, beta2: float) -> Any:
    """rho_t for x <= 1: with x / (e^x - 1) = 1 - x/2 + psi(x), rho_t = t + (a - 1) - (2 / L) psi(x), where
    a = 2 / (1 - beta2) - 2 / L (:func:`_a_minus_1`) and psi is summed from :data:`_PSI`; rho_1 = 1 exactly."""
    x2 = x * x
    psi = xp.zeros_like(x2)
    for coefficient in reversed(_PSI):
        psi = (psi + coefficient) * x2
    rho = t + _a_minus_1(beta2) - (2.0 / -math.log(beta2)) * psi
    return xp.where(t == 1.0, xp.ones_like(t), rho)


@functools.lru_cache(maxsize=64)
def _a_minus_1(beta2: float) -> float:
    """2 / (1 - beta2) - 2 / L - 1 for L = -log(beta2): 2 (L - eps) / (eps L) - 1 with eps = 1 - beta2, where
    L - eps = sum_k>=2 eps^k / k is summed (to round-off for eps <= 1/2) rather than subtracted."""
    eps, lg = 1.0 - beta2, -math.log(beta2)
    l_minus_eps = math.fsum(eps**k / k for k in range(2, 64)) if eps <= 0.5 else lg - eps
    return 2.0 * l_minus_eps / (eps * lg) - 1.0


def rho_t(step: Number, beta2: float) -> Number:
    r"""Length of the approximated simple moving average at step ``t`` (1-based).

    :math:`\rho_t = \rho_\infty - 2 t \beta_2^t / (1-\beta_2^t)`; :math:`\rho_1 = 1` and
    :math:`\rho_t` increases towards :math:`\rho_\infty`, its value at ``t = inf`` (the limit, hence the
    name); a Python int beyond the float range counts as ``inf``.

    Args:
        step: the step ``t``, an integer >= 1 or ``inf``, or an array/tensor of them.
        beta2: decay rate of the second moment, in ``[0, 1)``.

    Raises:
        ValueError: if a step is not an integer >= 1 or ``inf`` (NaN, ``-inf``, 0, 2.5), or ``beta2`` is outside
            ``[0, 1)``.
        TypeError: if ``step`` is not a real number, array or tensor, or ``beta2`` is not a real number.

    Example:
        >>> round(rho_t(1, 0.999), 12)
        1.0
    """
    beta2 = check_beta2(beta2)
    t, kind = _as_float64(step, "step")
    _check_steps(t)
    return _back(_rho_t(t, beta2), kind)


def _r_t(rho: Any, beta2: float) -> Any:
    xp = _backend(rho)
    inf = rho_inf(beta2)
    if inf <= 4.0:
        return xp.zeros_like(rho)  # the variance is never finite: never rectified
    defined = rho > 4.0
    safe_rho = xp.where(defined, rho, xp.full_like(rho, inf))
    # variance rectification term, eq. (6) of the paper
    ratio = (safe_rho - 4.0) * (safe_rho - 2.0) * inf / ((inf - 4.0) * (inf - 2.0) * safe_rho)
    return xp.where(defined, xp.sqrt(ratio), xp.zeros_like(rho))


def r_t(step: Number, beta2: float) -> Number:
    r"""Variance rectification term :math:`r_t` at step ``t``.

    :math:`r_t^2` is the ratio of the first-order variance of the adaptive learning rate at
    :math:`\rho_\infty` to that at :math:`\rho_t`, so :math:`r_t l_t` has the variance of a fully
    converged estimate. It lies in ``(0, 1)`` and tends to 1; where :math:`\rho_t \le 4` the
    first-order variance is undefined and ``r_t`` is defined as ``0`` (the limit as :math:`\rho_t \to 4^+`).
    At ``t = inf`` it is the limit, 1 (or 0 where :math:`\rho_\infty \le 4`).

    Args:
        step: the step ``t``, an integer >= 1 or ``inf``, or an array/tensor of them.
        beta2: decay rate of the second moment, in ``[0, 1)``.

    Raises:
        ValueError: if a step is not an integer >= 1 or ``inf`` (NaN, ``-inf``, 0, 2.5), or ``beta2`` is outside
            ``[0, 1)``.
        TypeError: if ``step`` is not a real number, array or tensor, or ``beta2`` is not a real number.

    Example:
        >>> r_t(5, 0.999) > 0.0, r_t(4, 0.999)
        (True, 0.0)
    """
    beta2 = check_beta2(beta2)
    t, kind = _as_float64(step, "step")
    _check_steps(t)
    return _back(_r_t(_rho_t(t, beta2), beta2), kind)


def _check_rho(rho: Any, lowest: float, what: str) -> None:
    message = f"Invalid rho: {{}} ({what} is finite only for {lowest:g} < rho < inf)"
    _check_all(rho, (rho > lowest) & _backend(rho).isfinite(rho), message)


def _stirling_tail(z: Any) -> Any:
    # lgamma(z) - [(z - 1/2) log z - z + log(2 pi)/2], Stirling's series to z^-13: error < 1e-16 for z >= 9.5.
    coefficients = (1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156)
    inv_z2 = 1.0 / (z * z)
    tail = _backend(z).zeros_like(z)
    for coefficient in reversed(coefficients):
        tail = tail * inv_z2 + coefficient
    return tail / z


def _log_gamma_ratio_term(rho: Any) -> Any:
    """c(rho) = 2 [lgamma((rho-1)/2) - lgamma(rho/2)] + log(rho/2), a number of order 3/(2 rho)."""
    xp = _backend(rho)
    x = rho / 2.0
    direct = 2.0 * (xp.lgamma(x - 0.5) - xp.lgamma(x)) + xp.log(x)
    big = rho >= _STIRLING_MIN_RHO
    xs = xp.where(big, x, xp.full_like(x, _STIRLING_MIN_RHO / 2.0))  # keep the unused branch finite
    # With the Stirling series the log terms reduce to 2 (x-1) log1p(-u) + 1 = sum_k u^k (k+2)/(k(k+1)),
    # u = 1/(2x) <= 1/20: summed by Horner, 14 terms reach float64 round-off without cancellation.
    u = 0.5 / xs
    series = xp.zeros_like(u)
    for k in range(14, 0, -1):
        series = (series + (k + 2) / (k * (k + 1))) * u
    series = series + 2.0 * (_stirling_tail(xs - 0.5) - _stirling_tail(xs))
    return xp.where(big, series, direct)


def variance_adaptive_lr(rho: Number) -> Number:
    r"""Exact variance of the adaptive learning rate for ``rho`` degrees of freedom, per unit :math:`\sigma^2`.

    .. math::
        \mathrm{Var}[l](\rho) = \rho \left[\frac{1}{\rho-2} - \frac{\Gamma((\rho-1)/2)^2}{2\,\Gamma(\rho/2)^2}\right]
        = \frac{\rho}{\rho-2} - \frac{\rho\, 2^{2\rho-5}}{\pi} B\!\left(\tfrac{\rho-1}{2}, \tfrac{\rho-1}{2}\right)^2

    (the variance of :math:`\sqrt{\rho/\chi^2_\rho}`). Multiply by :math:`1/\sigma^2` for gradients
    of variance :math:`\sigma^2`. Evaluated without cancellation at large ``rho`` (relative error
    about ``1e-16 * rho``).

    Args:
        rho: degrees of freedom, > 2 (a number, array or tensor).

    Raises:
        ValueError: if some ``rho <= 2`` (the variance is infinite there) or is not finite.
        TypeError: if ``rho`` is not a number, array or tensor.

    Example:
        >>> round(variance_adaptive_lr(1999.0) * 2 * 1999.0, 3)
        1.002
    """
    value, kind = _as_float64(rho, "rho")
    _check_rho(value, 2.0, "the variance of the adaptive learning rate")
    c = _log_gamma_ratio_term(value)
    # rho/(rho-2) - exp(c) rho/(rho-2) ... rearranged: [2 - (rho - 2) expm1(c)] / (rho - 2)
    return _back((2.0 - (value - 2.0) * _backend(c).expm1(c)) / (value - 2.0), kind)


def variance_adaptive_lr_first_order(rho: Number) -> Number:
    r"""First-order approximation of :func:`variance_adaptive_lr`: :math:`\rho / (2 (\rho-2)(\rho-4))`.

    This is the form the rectification term :math:`r_t` is built from; its ratio to the exact
    variance tends to 1 as ``rho`` grows.

    Args:
        rho: degrees of freedom, > 4 (a number, array or tensor).

    Raises:
        ValueError: if some ``rho <= 4`` (the approximation diverges there) or is not finite.
        TypeError: if ``rho`` is not a number, array or tensor.

    Example:
        >>> variance_adaptive_lr_first_order(6.0)
        0.375
    """
    value, kind = _as_float64(rho, "rho")
    _check_rho(value, 4.0, "the first-order variance")
    return _back(value / (2.0 * (value - 2.0) * (value - 4.0)), kind)


def first_rectified_step(beta2: float, threshold: float = 5.0) -> int | None:
    r"""The first step ``t`` with :math:`\rho_t >` ``threshold``: where RAdam starts taking adaptive steps.

    Args:
        beta2: decay rate of the second moment, in ``[0, 1)``.
        threshold: the rectification threshold, >= 4 (5 in torch and the authors' code, 4 in the paper).

    Returns:
        The step, or ``None`` when :math:`\rho_\infty \le` ``threshold`` (then no step is ever rectified).

    Raises:
        ValueError: if ``beta2`` is outside ``[0, 1)`` or ``threshold`` is below 4 or not finite.
        TypeError: if ``beta2`` or ``threshold`` is not a real number (a str or a bool is not).

    Example:
        >>> first_rectified_step(0.98), first_rectified_step(0.6)
        (6, None)
    """
    beta2, threshold = check_beta2(beta2), check_threshold(threshold)
    if rho_inf(beta2) <= threshold:
        return None
    # rho_t increases to rho_inf: grow an upper bound, then bisect.
    lo, hi = 0, 1
    while rho_t(hi, beta2) <= threshold:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rho_t(mid, beta2) > threshold:
            hi = mid
        else:
            lo = mid
    return hi
