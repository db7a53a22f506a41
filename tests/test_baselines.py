"""Tests of the comparison baselines: Adam-2k and the warmup factors for LambdaLR."""

import math

import pytest
import torch

from lightning_radam import Adam2k, linear_warmup, untuned_exponential_warmup, untuned_linear_warmup


def _quadratic_steps(optimizer, params, steps):
    """Run ``steps`` steps on sum(|p|^4 + Re p) and return the parameter values after each step."""
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        sum((p.abs().pow(4) + torch.real(p)).sum() for p in params).backward()
        optimizer.step()
        history.append([p.detach().clone() for p in params])
    return history


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.98)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_adam2k_with_k_zero_matches_torch_adam(weight_decay, betas, dtype):
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, dtype=dtype, requires_grad=True)]
    theirs = [ours[0].detach().clone().requires_grad_()]
    a = _quadratic_steps(Adam2k(ours, lr=0.01, betas=betas, weight_decay=weight_decay, k=0), ours, 30)
    b = _quadratic_steps(torch.optim.Adam(theirs, lr=0.01, betas=betas, weight_decay=weight_decay), theirs, 30)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x[0], y[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_adam2k_freezes_parameters_and_first_moment_for_k_steps(k):
    torch.manual_seed(0)
    param = torch.randn(4, dtype=torch.float64, requires_grad=True)
    start = param.detach().clone()
    optimizer = Adam2k([param], lr=0.01, betas=(0.9, 0.98), k=k)
    expected_v = torch.zeros_like(start)
    for _ in range(k):
        optimizer.zero_grad()
        (param.pow(4) + param).sum().backward()
        expected_v = 0.98 * expected_v + 0.02 * param.grad.square()
        optimizer.step()
    state = optimizer.state[param]
    assert torch.equal(param.detach(), start)
    assert torch.count_nonzero(state["exp_avg"]) == 0
    torch.testing.assert_close(state["exp_avg_sq"], expected_v, rtol=1e-14, atol=0)
    _quadratic_steps(optimizer, [param], 1)
    assert torch.all(param.detach() != start)


@pytest.mark.parametrize("k", [3, 50])
def test_adam2k_first_adam_step_has_size_lr_for_a_constant_gradient(k):
    # constant gradient g: m_hat = g after the first-moment bias correction from step k + 1, v_hat = g^2
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = Adam2k([param], lr=0.1, betas=(0.9, 0.99), eps=1e-300, k=k)  # eps must be > 0; this one is negligible
    gradient = torch.tensor([2.0, -3.0, 0.5], dtype=torch.float64)
    for _ in range(k + 1):
        param.grad = gradient.clone()
        optimizer.step()
    torch.testing.assert_close(param.detach(), -0.1 * gradient.sign(), rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
        ({"lr": float("nan")}, ValueError, "Invalid learning rate: nan"),
        ({"eps": -1e-8}, ValueError, "Invalid eps: -1e-08"),
        ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
        ({"weight_decay": -0.5}, ValueError, "Invalid weight_decay: -0.5"),
        ({"k": -1}, ValueError, "Invalid k: -1"),
        ({"k": 2.5}, TypeError, "Invalid k: expected an int, got 2.5"),
        ({"k": True}, TypeError, "Invalid k: expected an int, got True"),
    ],
)
def test_adam2k_rejects_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Adam2k([torch.zeros(2, requires_grad=True)], **kwargs)
    with pytest.raises(error, match=match):  # a parameter group is validated like the constructor
        Adam2k([{"params": [torch.zeros(2, requires_grad=True)], **kwargs}])


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (lambda: linear_warmup(4), lambda t: min(1.0, t / 4)),
        (lambda: linear_warmup(2.5), lambda t: min(1.0, t / 2.5)),
        (lambda: untuned_linear_warmup(0.98), lambda t: min(1.0, t * 0.02 / 2)),
        (lambda: untuned_linear_warmup(0.999), lambda t: min(1.0, t * 0.001 / 2)),
        (lambda: untuned_exponential_warmup(0.98), lambda t: 1.0 - math.exp(-0.02 * t)),
        (lambda: untuned_exponential_warmup(0.9), lambda t: 1.0 - math.exp(-0.1 * t)),
    ],
)
def test_warmup_factor_scales_step_t_in_lambda_lr(factory, expected):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factory())
    for t in range(1, 2201):  # the lr in force during optimizer step t
        assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * expected(t), rel=1e-12, abs=1e-15), t
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(("beta2", "steps"), [(0.98, 100), (0.999, 2000), (0.9, 20)])
def test_untuned_linear_warmup_reaches_one_after_two_over_one_minus_beta2_steps(beta2, steps):
    factor = untuned_linear_warmup(beta2)
    assert factor(steps - 2) < 1.0
    assert factor(steps - 1) == 1.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: linear_warmup(0), ValueError, "Invalid warmup_steps: 0"),
        (lambda: linear_warmup(float("inf")), ValueError, "Invalid warmup_steps: inf"),
        (lambda: linear_warmup("10"), TypeError, "Invalid warmup_steps: expected a number, got '10'"),
        (lambda: untuned_linear_warmup(1.0), ValueError, r"Invalid beta2: 1.0 \(expected 0 <= beta2 < 1\)"),
        (lambda: untuned_exponential_warmup(-0.1), ValueError, r"Invalid beta2: -0.1"),
        (lambda: untuned_exponential_warmup(None), TypeError, "Invalid beta2: expected a float, got None"),
    ],
)
def test_warmup_factories_reject_invalid_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
