"""The fused path of RAdam against the for-loop path (the reference), across the option table."""

import pytest
import torch
from helpers import CASE, PATHS, TOLERANCES, option_table, relative_error, run

from lightning_radam import RAdam, radam

LOW_PRECISION_CASES = ("defaults", "decoupled_weight_decay", "degenerated_to_sgd")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", option_table(lambda case: not case.complex))
def test_fused_matches_for_loop(case, dtype):
    tolerance = TOLERANCES[dtype]
    fused = run(RAdam, case, dtype=dtype, fused=True)
    loop = run(RAdam, case, dtype=dtype, fused=False, foreach=False)
    assert relative_error(fused.updates(), loop.updates()) < tolerance
    assert fused.optimizer.rectification_stats() == loop.optimizer.rectification_stats()
    for p, q in zip(fused.params, loop.params, strict=True):
        assert (p in fused.optimizer.state) == (q in loop.optimizer.state)
        if p in fused.optimizer.state:
            fused_state, loop_state = fused.optimizer.state[p], loop.optimizer.state[q]
            assert fused_state["step"].device.type == "cpu"
            assert fused_state["step"].dtype == torch.float32
            assert fused_state["step"].item() == loop_state["step"].item()
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(fused_state[key], loop_state[key], rtol=tolerance * 10, atol=tolerance * 10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", option_table(lambda case: case.name in LOW_PRECISION_CASES))
def test_fused_low_precision_as_accurate_as_for_loop(case, dtype):
    # In bf16/fp16 both paths round differently; judged against float64, the fused one is no worse.
    reference = run(RAdam, case, steps=20, scale=0.01, fused=False, foreach=False).updates()
    fused = run(RAdam, case, steps=20, dtype=dtype, scale=0.01, fused=True).updates()
    loop = run(RAdam, case, steps=20, dtype=dtype, scale=0.01, fused=False, foreach=False).updates()
    assert relative_error(fused, reference) <= 1.1 * relative_error(loop, reference)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_fused_is_the_default(dtype):
    default = run(RAdam, CASE["defaults"], dtype=dtype)
    fused = run(RAdam, CASE["defaults"], dtype=dtype, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(default.updates(), fused.updates(), strict=True))


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
    # one complex parameter in the group: the whole group takes the for-loop path (on the CPU)
    default = run(RAdam, CASE["complex_param"])
    loop = run(RAdam, CASE["complex_param"], foreach=False, fused=False)
    assert all(torch.equal(p, q) for p, q in zip(default.params, loop.params, strict=True))


def test_fused_foreach_and_fused_both_true_raises():
    with pytest.raises(ValueError, match="foreach and fused"):
        RAdam([torch.nn.Parameter(torch.zeros(2))], foreach=True, fused=True)


@pytest.mark.parametrize("path", PATHS)
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


@pytest.mark.parametrize(("decoupled_weight_decay", "kernel"), [(False, "_fused_adam_"), (True, "_fused_adamw_")])
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
