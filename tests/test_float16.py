"""float16 parameters: every path computes the step in float32 and stores parameters and state in float16.

The fused kernel already did; the for-loop and foreach paths used to update the second moment in float16,
where ``(1 - b2) g^2`` underflows for ``|g|`` below about 5e-3, and then divided the mean by eps alone.
"""

import math

import pytest
import torch

from lightning_radam import RAdam

PATHS = {"for_loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
STEPS = 12  # 5 unrectified steps (threshold 5), then 7 rectified ones
GRADIENTS = [5e-3, 1e-3, 2e-4, 0.5]  # (1 - b2) g^2 underflows in float16 for the first three; 0.5: a control


def _movement(dtype, grad, steps=STEPS, **path):
    """Train a zero parameter on a constant gradient; return how far it moved, and the optimizer."""
    theta = torch.nn.Parameter(torch.zeros(4, dtype=dtype))
    optimizer = RAdam([theta], lr=LR, betas=BETAS, eps=EPS, **path)
    for _ in range(steps):
        theta.grad = torch.full_like(theta, grad)
        optimizer.step()
    assert torch.all(theta == theta[0])
    return -theta[0].double().item(), optimizer


def _half_ulp(x):
    """At most half a float16 ulp at |x|: 2^-25 among subnormals (spacing 2^-24), else at most |x| 2^-11."""
    return max(2.0**-25, abs(x) * 2.0**-11)


def _float16_band(grad, step_sizes):
    """Bounds on the movement of a float16 run that computes in float32 and rounds m, v and theta once per step.

    Derived from float16 rounding alone: each stored m, v and theta is within half an ulp of the float32 value
    it rounds (``_half_ulp``), and each step reads the stored m and v back, so the interval compounds; v's
    lower end stays at least the step's own ``(1 - b2) g^2``, which the step reads before rounding it. The
    float32 arithmetic adds a relative 1e-6 per step (a few float32 roundings of 6e-8 each). ``step_sizes``
    holds ``lr r_t sqrt(1 - b2^t) / (1 - b1^t)`` per step, or 0 for an unrectified one.
    """
    beta1, beta2 = BETAS
    slack = 1e-6
    m_lo = m_hi = v_lo = v_hi = moved_lo = moved_hi = 0.0
    for step_size in step_sizes:
        m_lo = (beta1 * max(0.0, m_lo - _half_ulp(m_lo)) + (1 - beta1) * grad) * (1 - slack)
        m_hi = (beta1 * (m_hi + _half_ulp(m_hi)) + (1 - beta1) * grad) * (1 + slack)
        v_lo = (beta2 * max(0.0, v_lo - _half_ulp(v_lo)) + (1 - beta2) * grad**2) * (1 - slack)
        v_hi = (beta2 * (v_hi + _half_ulp(v_hi)) + (1 - beta2) * grad**2) * (1 + slack)
        if step_size:
            moved_lo += step_size * m_lo / (math.sqrt(v_hi) + EPS) * (1 - slack)
            moved_hi += step_size * m_hi / (math.sqrt(v_lo) + EPS) * (1 + slack)
            moved_lo, moved_hi = moved_lo - _half_ulp(moved_lo), moved_hi + _half_ulp(moved_hi)
        # m_lo, m_hi, v_lo, v_hi now bound the values that were rounded into the state
    return moved_lo, moved_hi


def _step_sizes(optimizer_stats_per_step):
    beta1, beta2 = BETAS
    return [
        LR * s.r_t * math.sqrt(1 - beta2**s.step) / (1 - beta1**s.step) if s.rectified else 0.0
        for s in optimizer_stats_per_step
    ]


def _float32_run(grad):
    """The float32 run on the same (float16-representable) gradient, with the step plan of every step."""
    theta = torch.nn.Parameter(torch.zeros(4))
    optimizer = RAdam([theta], lr=LR, betas=BETAS, eps=EPS, foreach=False)
    stats = []
    for _ in range(STEPS):
        theta.grad = torch.full_like(theta, grad)
        optimizer.step()
        stats.append(optimizer.rectification_stats()[0])
    return -theta[0].double().item(), stats


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("grad", GRADIENTS)
def test_float16_movement_within_float16_rounding_of_float32(grad, path):
    grad = float(torch.tensor(grad, dtype=torch.float16))  # the same gradient in both runs
    float32, stats = _float32_run(grad)
    lo, hi = _float16_band(grad, _step_sizes(stats))
    assert lo <= float32 <= hi  # the band holds exact arithmetic
    moved, optimizer = _movement(torch.float16, grad, **PATHS[path])
    assert lo <= moved <= hi, f"moved {moved:.4g}, float32 {float32:.4g}, float16 band [{lo:.4g}, {hi:.4g}]"
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float16


@pytest.mark.parametrize("grad", GRADIENTS)
def test_float16_paths_agree_within_float16_rounding(grad):
    # The same float32 arithmetic in a different order: at most one float16 ulp of theta apart per step.
    moved = {path: _movement(torch.float16, grad, **kwargs)[0] for path, kwargs in PATHS.items()}
    ulp = 2.0 ** (math.floor(math.log2(moved["fused"])) - 10)
    for path in ("for_loop", "foreach"):
        assert abs(moved[path] - moved["fused"]) <= STEPS * ulp, moved


# (name, RAdam keyword arguments): the options that touch the low-precision update
OPTIONS = [
    ("defaults", {}),
    ("l2_weight_decay", dict(weight_decay=0.1)),
    ("decoupled_weight_decay", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("maximize", dict(maximize=True)),
    ("degenerated_to_sgd", dict(degenerated_to_sgd=True)),
]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("name", "kwargs"), OPTIONS, ids=[name for name, _ in OPTIONS])
def test_low_precision_paths_agree_with_fused_path(name, kwargs, dtype):
    # Random gradients over three decades of scale, some of them always zero: all paths within a few ulps.
    generator = torch.Generator().manual_seed(0)
    initial = torch.randn(3, 50, generator=generator).to(dtype)
    scale = torch.tensor([1e-4, 1e-2, 1.0]).unsqueeze(1)
    grads = [(scale * torch.randn(3, 50, generator=generator)).to(dtype) for _ in range(STEPS)]
    for g in grads:
        g[:, :5] = 0
    results = {}
    for path, path_kwargs in PATHS.items():
        theta = torch.nn.Parameter(initial.clone())
        optimizer = RAdam([theta], lr=1e-2, **kwargs, **path_kwargs)
        for g in grads:
            theta.grad = g.clone()
            optimizer.step()
        results[path] = theta.detach().double()
        assert torch.isfinite(theta).all()
    ulp = torch.finfo(dtype).eps * results["fused"].abs().clamp_min(torch.finfo(dtype).tiny)
    for path in ("for_loop", "foreach"):
        assert torch.all((results[path] - results["fused"]).abs() <= STEPS * ulp), path
