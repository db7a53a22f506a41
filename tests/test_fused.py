"""The fused path of RAdam against the for-loop path (the reference), across the option table."""

import math

import pytest
import torch

from lightning_radam import RAdam, radam

STEPS = 12  # the unrectified steps (1-5 at threshold 5, 1-4 at threshold 4) and seven rectified ones
SHAPES = [(30, 20), (7,), (5, 5)]


def _groups(params, case):
    """Split ``params`` into the parameter groups of ``case``."""
    if case != "groups":
        return params
    return [
        {"params": params[:1]},
        {"params": params[1:2], "betas": (0.8, 0.99), "lr": 3e-2},
        {"params": params[2:], "betas": (0.95, 0.98), "lr": 5e-3, "weight_decay": 0.05},
    ]


# (case, RAdam keyword arguments); the case name also drives the gradients and the groups
CASES = [
    ("defaults", {}),
    ("l2_weight_decay", dict(weight_decay=0.1)),
    ("decoupled_weight_decay", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("maximize", dict(maximize=True)),
    ("tensor_lr", dict(lr=torch.tensor(2e-2))),
    ("groups", {}),
    ("frozen_then_resumed", {}),
    ("never_a_grad", {}),
    ("empty_param", {}),
    ("non_contiguous_param", {}),
    ("threshold_4", dict(threshold=4.0)),
    ("degenerated_to_sgd", dict(degenerated_to_sgd=True)),
    ("sgd_decoupled_weight_decay", dict(degenerated_to_sgd=True, weight_decay=0.1, decoupled_weight_decay=True)),
    ("sgd_threshold_4_maximize", dict(degenerated_to_sgd=True, threshold=4.0, maximize=True)),
]


def _run(case, kwargs, dtype, steps=STEPS, scale=1.0, **path):
    """Train ``steps`` steps on cos(theta) + noise gradients; return the updates, the optimizer and its params."""
    generator = torch.Generator().manual_seed(0)
    tensors = [scale * torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
    if case == "empty_param":
        tensors.append(torch.empty(0, dtype=torch.float64))
    if case == "non_contiguous_param":
        tensors[0] = tensors[0].t()  # a transposed leaf
    params = [torch.nn.Parameter(t.to(dtype)) for t in tensors]
    initial = [p.detach().clone() for p in params]
    optimizer = RAdam(_groups(params, case), **{"lr": 1e-2, **kwargs}, **path)
    for step in range(1, steps + 1):
        for index, p in enumerate(params):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            frozen = (case == "frozen_then_resumed" and index == 1 and 3 <= step <= 8) or (
                case == "never_a_grad" and index == 2
            )
            p.grad = None if frozen else (torch.cos(p.detach().double()) + 0.1 * noise).to(dtype)
            if case == "non_contiguous_param" and p.grad is not None:
                p.grad = p.grad.contiguous()  # row-major, unlike the transposed parameter and its moments
        optimizer.step()
    updates = [(p.detach().double() - p0.double()) for p, p0 in zip(params, initial)]
    return updates, optimizer, params


def _relative_error(actual, expected):
    num = math.sqrt(sum(float(((a - e) ** 2).sum()) for a, e in zip(actual, expected)))
    den = math.sqrt(sum(float((e**2).sum()) for e in expected))
    return num / den


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize(("case", "kwargs"), CASES, ids=[c for c, _ in CASES])
def test_fused_matches_for_loop(case, kwargs, dtype, tolerance):
    fused_updates, fused, fused_params = _run(case, kwargs, dtype, fused=True)
    loop_updates, loop, loop_params = _run(case, kwargs, dtype, fused=False, foreach=False)
    assert _relative_error(fused_updates, loop_updates) < tolerance
    assert fused.rectification_stats() == loop.rectification_stats()
    for p, q in zip(fused_params, loop_params):
        assert (p in fused.state) == (q in loop.state)
        if p in fused.state:
            assert fused.state[p]["step"].device.type == "cpu" and fused.state[p]["step"].dtype == torch.float32
            assert fused.state[p]["step"].item() == loop.state[q]["step"].item()
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    fused.state[p][key], loop.state[q][key], rtol=tolerance * 10, atol=tolerance * 10
                )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    ("case", "kwargs"),
    [CASES[0], CASES[2], CASES[11]],
    ids=["defaults", "decoupled_weight_decay", "degenerated_to_sgd"],
)
def test_fused_low_precision_as_accurate_as_for_loop(case, kwargs, dtype):
    # In bf16/fp16 both paths round differently; judged against float64, the fused one is no worse.
    reference, _, _ = _run(case, kwargs, torch.float64, steps=20, scale=0.01, fused=False, foreach=False)
    fused, _, _ = _run(case, kwargs, dtype, steps=20, scale=0.01, fused=True)
    loop, _, _ = _run(case, kwargs, dtype, steps=20, scale=0.01, fused=False, foreach=False)
    assert _relative_error(fused, reference) <= 1.1 * _relative_error(loop, reference)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_is_the_default(dtype):
    default_updates, _, _ = _run("defaults", {}, dtype)
    fused_updates, _, _ = _run("defaults", {}, dtype, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(default_updates, fused_updates))


@pytest.mark.parametrize(
    ("make_param", "match"),
    [
        (lambda: torch.zeros(3, dtype=torch.complex64), "complex64 tensor on cpu"),
        (lambda: torch.zeros(3, device="meta"), "float32 tensor on meta"),
    ],
    ids=["complex", "meta_device"],
)
def test_fused_forced_where_unsupported_raises(make_param, match):
    param = torch.nn.Parameter(make_param())
    with pytest.raises(RuntimeError, match=f"fused=True.*{match}"):
        RAdam([param], fused=True)
    with pytest.raises(RuntimeError, match=f"fused=True.*{match}"):
        radam([param], [param.detach()], [param.detach()], [param.detach()], [torch.tensor(0.0)], fused=True,
              beta1=0.9, beta2=0.999, lr=1e-3, weight_decay=0.0, eps=1e-8)  # fmt: skip


def test_fused_default_falls_back_silently_for_complex():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(4, 3, dtype=torch.complex128, generator=generator)
    params = [torch.nn.Parameter(values.clone()) for _ in range(2)]
    default = RAdam([params[0]], lr=1e-2)
    loop = RAdam([params[1]], lr=1e-2, foreach=False, fused=False)
    for _ in range(STEPS):
        grad = torch.randn(4, 3, dtype=torch.complex128, generator=generator)
        for p in params:
            p.grad = grad.clone()
        default.step()
        loop.step()
    assert torch.equal(params[0], params[1])


def test_fused_foreach_and_fused_both_true_raises():
    with pytest.raises(ValueError, match="foreach and fused"):
        RAdam([torch.nn.Parameter(torch.zeros(2))], foreach=True, fused=True)


@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), dict(fused=True)])
def test_float16_zero_gradients_do_not_turn_into_nan(path):
    # eps = 1e-8 is 0 in float16: the for-loop and foreach paths divide in float32, as the fused kernel does.
    # (Gradients below ~2e-4 still lose their square to float16's range in v: keep float32 master weights.)
    theta = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
    optimizer = RAdam([theta], lr=1e-2, **path)
    reference = torch.nn.Parameter(torch.ones(4, dtype=torch.float32))
    reference_optimizer = RAdam([reference], lr=1e-2, foreach=False)
    for _ in range(10):
        theta.grad = torch.tensor([0.0, 0.5, 1.0, -3.0], dtype=torch.float16)  # squares that float16 holds
        reference.grad = theta.grad.float()
        optimizer.step()
        reference_optimizer.step()
    assert torch.isfinite(theta).all()
    assert torch.allclose(theta.float(), reference, atol=2e-3)


@pytest.mark.parametrize("decoupled_weight_decay,kernel", [(False, "_fused_adam_"), (True, "_fused_adamw_")])
def test_fused_path_runs_torchs_fused_kernel_on_rectified_steps_only(monkeypatch, decoupled_weight_decay, kernel):
    calls = []
    original = getattr(torch, kernel)
    monkeypatch.setattr(torch, kernel, lambda *args, **kwargs: calls.append(kwargs["lr"]) or original(*args, **kwargs))
    theta = torch.nn.Parameter(torch.ones(8))
    optimizer = RAdam(
        [theta], lr=1e-2, weight_decay=0.1, decoupled_weight_decay=decoupled_weight_decay
    )  # fused by default
    for _ in range(8):
        theta.grad = torch.ones(8)
        optimizer.step()
    assert len(calls) == 3  # steps 6, 7, 8: steps 1-5 are unrectified at threshold 5
    stats = optimizer.rectification_stats()[0]
    assert calls[-1] == pytest.approx(1e-2 * stats.r_t)  # lr' = lr * r_t
