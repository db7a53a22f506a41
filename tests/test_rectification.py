"""The rectification math against independent formulas, Monte Carlo, and its degenerate inputs."""

import itertools
import math

import numpy as np
import pytest
import torch

from lightning_radam.rectification import (
    first_rectified_step,
    r_t,
    rho_inf,
    rho_t,
    variance_adaptive_lr,
    variance_adaptive_lr_first_order,
)


def plain_r_t(t, beta2):
    inf = 2 / (1 - beta2) - 1
    rho = inf - 2 * t * beta2**t / (1 - beta2**t)
    return math.sqrt((rho - 4) * (rho - 2) * inf / ((inf - 4) * (inf - 2) * rho))


@pytest.mark.parametrize(
    ("step", "beta2"),
    [
        (5, 0.999),
        (6, 0.999),
        (10, 0.999),
        (100, 0.999),
        (1000, 0.999),
        (6, 0.98),
        (50, 0.98),
        (6, 0.9),
        (40, 0.9),
        (20, 0.7),
    ],
)
def test_r_t_at_known_steps(step, beta2):
    assert r_t(step, beta2) == pytest.approx(plain_r_t(step, beta2), rel=1e-12)


# rho_t at the float beta2 given, computed with mpmath at 60 digits. Near beta2 = 1 the textbook form's two terms of
# about 2 / (1 - beta2) cancel (at 1 - 2**-52 it gave rho_2..5 = 3, 4, 5, 5, and rectified step 4 at threshold 4).
RHO_T_HIGH_PRECISION = [
    (1 - 2**-52, [
        (1, 1.0), (2, 1.9999999999999999), (5, 4.9999999999999991),
        (6, 5.9999999999999987), (1000, 999.99999999996299), (1000000, 999999.99996299257),
    ]),
    (1 - 1e-12, [
        (1, 1.0), (2, 1.9999999999995), (5, 4.9999999999960001),
        (6, 5.9999999999941668), (1000, 999.99999983333719), (1000000, 999999.83333702029),
    ]),
    (1 - 1e-6, [
        (1, 1.0), (2, 1.99999949999975), (5, 4.9999959999979999),
        (6, 5.9999941666637498), (1000, 999.83333341943968), (1000000, 836046.5069304949),
    ]),
    (0.999, [
        (1, 1.0), (2, 1.9994997498749375), (5, 4.9959980004016012),
        (6, 5.9941637516567173), (1000, 835.96737561079344), (1000000, 1998.9999999999982),
    ]),
    (0.9, [
        (1, 1.0), (2, 1.9473684210526316), (5, 4.5805719030060317),
        (6, 5.389564601256192), (1000, 19.000000000000004), (1000000, 19.000000000000004),
    ]),
    (0.5, [
        (1, 1.0), (2, 1.6666666666666667), (5, 2.6774193548387097),
        (6, 2.8095238095238095), (1000, 3.0), (1000000, 3.0),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("beta2", "values"), RHO_T_HIGH_PRECISION)
@pytest.mark.parametrize("make", [list, np.asarray, torch.tensor])
def test_rho_t_to_round_off_for_any_beta2(beta2, values, make):
    steps, expected = zip(*values, strict=True)
    if make is list:  # one Python float at a time: the optimizer's path on every step
        got = np.asarray([rho_t(float(t), beta2) for t in steps])
    else:
        got = np.asarray(rho_t(make([float(t) for t in steps]), beta2))
    np.testing.assert_allclose(got, expected, rtol=4e-16, atol=0)
    if beta2 > 0.5:  # increasing (up to its limit in float64), first rectified where the exact value passes 4
        assert (np.diff(got[:4]) > 0).all()
        assert (np.diff(got) >= 0).all()
        assert first_rectified_step(beta2, threshold=4.0) == 5


def test_rho_t_known_values():
    # DESIGN.md: in float32, rho_6 at b2 = 0.999 comes out 6.0005 instead of 5.9942.
    assert rho_t(6, 0.999) == pytest.approx(5.994163751656, abs=1e-11)
    assert rho_t(1, 0.999) == pytest.approx(1.0, abs=1e-12)
    assert rho_inf(0.999) == pytest.approx(1999.0, rel=1e-14)
    assert rho_t(100000, 0.999) == pytest.approx(rho_inf(0.999), rel=1e-15)


@pytest.mark.parametrize("make", [np.asarray, torch.tensor, list])
def test_math_on_arrays_matches_scalars(make):
    steps = [1, 2, 5, 6, 7, 100, 5000]
    rhos = [4.5, 6.0, 20.0, 1999.0]
    out = r_t(make(steps), 0.999)
    assert isinstance(out, torch.Tensor if make is torch.tensor else np.ndarray)
    assert np.asarray(out).tolist() == [r_t(s, 0.999) for s in steps]
    assert np.asarray(rho_t(make(steps), 0.999)).tolist() == [rho_t(s, 0.999) for s in steps]
    assert np.asarray(variance_adaptive_lr(make(rhos))).tolist() == pytest.approx(
        [variance_adaptive_lr(r) for r in rhos], rel=1e-15
    )


def test_math_keeps_the_tensor_device_and_returns_float64():
    out = r_t(torch.arange(1, 10, dtype=torch.float32), 0.99)
    assert out.dtype == torch.float64
    assert out.device.type == "cpu"


@pytest.mark.parametrize("rho", [8.0, 12.0, 30.0])
def test_exact_variance_matches_monte_carlo(rho):
    # l = sqrt(rho / X) with X ~ chi2(rho): the adaptive learning rate for unit gradient variance.
    generator = torch.Generator().manual_seed(int(rho))
    x = torch._standard_gamma(torch.full((2_000_000,), rho / 2, dtype=torch.float64), generator=generator) * 2
    adaptive_lr = (rho / x).sqrt()
    deviation2 = (adaptive_lr - adaptive_lr.mean()) ** 2
    estimate, standard_error = deviation2.mean().item(), deviation2.std().item() / math.sqrt(adaptive_lr.numel())
    assert abs(estimate - variance_adaptive_lr(rho)) < 5 * standard_error


# High-precision values of rho * [1/(rho-2) - Gamma((rho-1)/2)^2 / (2 Gamma(rho/2)^2)] (mpmath, 50 digits).
EXACT_VARIANCE = [
    (2.5, 2.715267094777682),
    (3.0, 1.090140682897256),
    (4.0, 0.4292036732051034),
    (5.0, 0.2519560614053748),
    (6.0, 0.17464059926680597),
    (20.0, 0.030424084730115004),
    (25.0, 0.02336723022656316),
    (100.0, 0.005192815749292184),
    (1999.0, 0.00025059493183033065),
]


@pytest.mark.parametrize(("rho", "expected"), EXACT_VARIANCE)
def test_exact_variance_against_high_precision(rho, expected):
    assert variance_adaptive_lr(rho) == pytest.approx(expected, rel=1e-13)


def test_exact_variance_equals_the_beta_function_form():
    for rho in [4.5, 5.5, 9.0, 17.0, 40.0]:
        beta = math.exp(2 * math.lgamma((rho - 1) / 2) - math.lgamma(rho - 1))
        beta_form = rho / (rho - 2) - rho * 2 ** (2 * rho - 5) / math.pi * beta**2
        assert variance_adaptive_lr(rho) == pytest.approx(beta_form, rel=1e-10)


def test_first_order_over_exact_tends_to_one():
    rhos = [5.0, 10.0, 100.0, 1e3, 1e4, 1e6, 1e9]
    gaps = [abs(variance_adaptive_lr_first_order(r) / variance_adaptive_lr(r) - 1) for r in rhos]
    assert all(a > b for a, b in itertools.pairwise(gaps))
    # asymptotically first-order / exact = 1 + 9 / (4 rho) + O(rho^-2)
    assert all(abs(gap * r - 2.25) < 3 / math.sqrt(r) for gap, r in zip(gaps, rhos, strict=True) if r >= 100)


def test_variance_decreases_in_rho():
    for fn, lowest in ((variance_adaptive_lr, 2.01), (variance_adaptive_lr_first_order, 4.01)):
        values = fn(np.linspace(lowest, 5000, 2000))
        assert np.all(values > 0)
        assert np.all(np.diff(values) < 0)


@pytest.mark.parametrize(
    ("beta2", "threshold", "expected"),
    [
        (0.999, 5.0, 6),
        (0.999, 4.0, 5),
        (0.9995, 5.0, 6),
        (0.9, 5.0, 6),
        (0.9, 4.0, 5),
        (0.98, 5.0, 6),
        (0.7, 5.0, 10),
        (0.6, 5.0, None),
        (0.6, 4.0, None),
        (0.0, 4.0, None),
        (0.999, 1000.0, 1257),
    ],
)
def test_first_rectified_step(beta2, threshold, expected):
    assert first_rectified_step(beta2, threshold) == expected
    if expected is not None:
        assert rho_t(expected, beta2) > threshold >= rho_t(expected - 1, beta2)


@pytest.mark.parametrize("beta2", [0.0, 0.3, 0.6])
def test_r_t_is_zero_when_rho_inf_at_most_4(beta2):
    values = r_t(np.arange(1, 200), beta2)
    assert np.all(values == 0.0)
    assert np.all(np.isfinite(rho_t(np.arange(1, 200), beta2)))


def test_r_t_near_beta2_of_0_6_is_finite():
    for beta2 in [0.6 + 1e-12, 0.6000001, 0.61]:
        values = r_t(np.arange(1, 2000), beta2)
        assert np.all(np.isfinite(values))
        assert np.all((values >= 0) & (values <= 1))


BAD_INPUT = [
    (lambda: rho_inf(1.0), ValueError, "Invalid beta2: 1.0"),
    (lambda: rho_inf(-0.1), ValueError, "Invalid beta2: -0.1"),
    (lambda: rho_t(0, 0.999), ValueError, "Invalid step: 0"),
    (lambda: r_t(np.array([1, 2.5]), 0.999), ValueError, "Invalid step: 2.5"),
    (lambda: r_t("6", 0.999), TypeError, "Invalid step: expected a number, array or tensor, got str"),
    (lambda: variance_adaptive_lr(2.0), ValueError, "Invalid rho: 2.0"),
    (lambda: variance_adaptive_lr_first_order(4.0), ValueError, "Invalid rho: 4.0"),
    (lambda: variance_adaptive_lr(np.array([6.0, float("nan")])), ValueError, "Invalid rho: nan"),
    (lambda: variance_adaptive_lr_first_order(float("inf")), ValueError, "Invalid rho: inf"),
    (lambda: first_rectified_step(0.999, threshold=3.0), ValueError, "Invalid threshold: 3.0"),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_INPUT)
def test_math_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
