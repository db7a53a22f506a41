"""Property tests (hypothesis) of the rectification math and of the optimizer's state."""

import math

import torch
from helpers import PATHS
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_radam import RAdam
from lightning_radam.rectification import r_t, rho_inf, rho_t, variance_adaptive_lr, variance_adaptive_lr_first_order

beta2s = st.floats(min_value=0.0, max_value=0.99999, exclude_max=False)
rectifiable_beta2s = st.floats(min_value=0.61, max_value=0.99999)
steps = st.integers(min_value=1, max_value=10**7)
rhos = st.floats(min_value=2.0, max_value=1e12, exclude_min=True)


@given(beta2=beta2s, t=steps)
def test_rho_t_increases_in_t_and_stays_below_rho_inf(beta2, t):
    assert 1.0 - 1e-9 <= rho_t(t, beta2) <= rho_t(t + 1, beta2) <= rho_inf(beta2)


@given(beta2=beta2s, t=steps)
def test_r_t_lies_in_zero_one(beta2, t):
    value = r_t(t, beta2)
    assert 0.0 <= value <= 1.0
    assert (value > 0.0) == (rho_t(t, beta2) > 4.0 and rho_inf(beta2) > 4.0)


@given(beta2=rectifiable_beta2s)
def test_r_t_tends_to_one(beta2):
    late = int(60 / (1 - beta2))  # beta2^t < e^-60: rho_t has converged to rho_inf
    assert r_t(late, beta2) == 1.0 or abs(r_t(late, beta2) - 1.0) < 1e-12


@given(rho=rhos, factor=st.floats(min_value=1e-6, max_value=10.0))
def test_exact_variance_is_positive_and_decreasing(rho, factor):
    larger = rho * (1.0 + factor)
    assert variance_adaptive_lr(rho) > variance_adaptive_lr(larger) > 0.0


@given(rho=st.floats(min_value=10.0, max_value=1e12))
def test_first_order_over_exact_tends_to_one(rho):
    gap = variance_adaptive_lr_first_order(rho) / variance_adaptive_lr(rho) - 1.0
    assert 0.0 < gap <= 4.0 / rho


@settings(max_examples=60, deadline=None)
@given(
    beta1=st.floats(min_value=0.0, max_value=0.999999),
    beta2=st.floats(min_value=0.0, max_value=0.999999),
    eps=st.floats(min_value=1e-12, max_value=1e-3),
    lr=st.floats(min_value=0.0, max_value=10.0),
    weight_decay=st.floats(min_value=0.0, max_value=1.0),
    decoupled=st.booleans(),
    degenerated_to_sgd=st.booleans(),
    threshold=st.floats(min_value=4.0, max_value=50.0),
    path=st.sampled_from([row.values[0] for row in PATHS]),
    n_steps=st.integers(min_value=1, max_value=40),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    grads=st.lists(st.floats(min_value=-1e15, max_value=1e15), min_size=3, max_size=3),
    scale=st.sampled_from([0.0, 1e-30, 1.0, 1e-3]),
)
def test_finite_gradients_never_produce_non_finite_state(
    beta1, beta2, eps, lr, weight_decay, decoupled, degenerated_to_sgd, threshold, path, n_steps, dtype, grads, scale
):
    theta = torch.zeros(6, dtype=dtype, requires_grad=True)
    optimizer = RAdam(
        [theta], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay * 1e-3,
        decoupled_weight_decay=decoupled, degenerated_to_sgd=degenerated_to_sgd, threshold=threshold, **path,
    )  # fmt: skip
    pattern = torch.tensor(grads + [0.0, scale, -scale], dtype=dtype)
    for t in range(n_steps):
        theta.grad = pattern * math.cos(t)  # exactly-zero elements, tiny ones and sign changes
        optimizer.step()
        state = optimizer.state[theta]
        for tensor in (theta, state["exp_avg"], state["exp_avg_sq"], state["step"]):
            assert torch.isfinite(tensor).all()
        stats = optimizer.rectification_stats()[0]
        assert math.isfinite(stats.rho_t)
        assert math.isfinite(stats.r_t)
    assert state["step"].item() == n_steps
