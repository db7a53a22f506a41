"""The CUDA branches, on a GPU: the fused kernel, foreach and the for-loop on CUDA tensors, the histogram monitor's
synchronisation-free bucket counts, device-resident step counts, GradScaler with float16 autocast, and a real
Trainer fit with both monitors. The same option table and helpers as the CPU tests (tests/helpers.py).

Every test here carries the ``cuda`` marker: skipped without a GPU (tests/conftest.py); ``pytest -m cuda`` runs
only these.
"""

import pytest
import torch
from helpers import (
    BETA2S,
    CASE,
    PATHS,
    STEPS,
    TOLERANCES,
    Model,
    assert_histogram_equals_numpy,
    assert_matches_math,
    assert_same,
    backward,
    binned_values,
    event_log,
    known_gradients,
    make_trainer,
    option_table,
    read_events,
    relative_error,
    run,
    scalar_series,
    snapshot,
    state_tensors,
    two_groups,
)
from lightning.pytorch.plugins.precision import MixedPrecision

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor, log2_bucket_counts
from lightning_radam.callbacks.gradient_histogram_monitor import _count_ids

pytestmark = pytest.mark.cuda

CUDA = "cuda"
DTYPES = [torch.float64, torch.float32]
LONG = 300  # float64 runs long enough for a parameter frozen at FROZEN_STEPS to resume in the rectified phase


def steps_for(dtype):
    return LONG if dtype == torch.float64 else STEPS


def assert_same_state(run_a, run_b, tolerance):
    """Both runs gave the same parameters a state, with host-side float32 step counts that agree, and moments
    within ``tolerance * 10`` (as tests/test_fused.py); RAdam's rectification stats are equal."""
    assert run_a.optimizer.rectification_stats() == run_b.optimizer.rectification_stats()
    for p, q in zip(run_a.params, run_b.params, strict=True):
        assert (p in run_a.optimizer.state) == (q in run_b.optimizer.state)
        if p not in run_a.optimizer.state:
            continue
        a, b = run_a.optimizer.state[p], run_b.optimizer.state[q]
        assert a["step"].device.type == "cpu"  # step counts stay on the host, also for CUDA parameters
        assert a["step"].dtype == torch.float32
        assert a["step"].item() == b["step"].item()
        for key in ("exp_avg", "exp_avg_sq"):
            assert a[key].device == p.device
            torch.testing.assert_close(a[key].cpu(), b[key].cpu(), rtol=tolerance * 10, atol=tolerance * 10)


# ------------------------------------------------------------------------------------------------- the update


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "path"), option_table(lambda case: case.torch_comparable, paths=True))
def test_cuda_radam_matches_torch_radam(case, path, dtype):
    ours = run(RAdam, case, steps_for(dtype), dtype=dtype, device=CUDA, degenerated_to_sgd=True, **path)
    theirs = run(torch.optim.RAdam, case, steps_for(dtype), dtype=dtype, device=CUDA, foreach=False)
    assert all(p.device.type == CUDA for p in ours.params)
    assert relative_error(ours.updates(), theirs.updates()) < TOLERANCES[dtype]
    ours_state = state_tensors(ours.optimizer, ours.params)
    assert relative_error(ours_state, state_tensors(theirs.optimizer, theirs.params)) < TOLERANCES[dtype]
    assert ours.step_counts() == theirs.step_counts()


# every path on CUDA against the for-loop path on the CPU and, but for the for-loop itself, on CUDA
AGAINST_FOR_LOOP = [
    pytest.param(*row.values, device, id=f"{row.id}-{device}")
    for row in option_table(paths=True)
    for device in ("cpu", CUDA)
    if not (device == CUDA and row.values[1] == PATHS[0].values[0])
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "path", "reference_device"), AGAINST_FOR_LOOP)
def test_cuda_radam_matches_the_for_loop(case, path, reference_device, dtype):
    ours = run(RAdam, case, steps_for(dtype), dtype=dtype, device=CUDA, **path)
    loop = run(RAdam, case, steps_for(dtype), dtype=dtype, device=reference_device, foreach=False, fused=False)
    assert relative_error(ours.updates(), loop.updates()) < TOLERANCES[dtype]
    assert_same_state(ours, loop, TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_cuda_fused_is_the_default(dtype):
    default = run(RAdam, CASE["defaults"], dtype=dtype, device=CUDA)
    fused = run(RAdam, CASE["defaults"], dtype=dtype, device=CUDA, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(default.updates(), fused.updates(), strict=True))


def test_cuda_default_falls_back_to_foreach_for_complex():
    # off the CPU the fallback for a group the fused kernel cannot take is foreach, not the for-loop
    default = run(RAdam, CASE["complex_param"], device=CUDA)
    foreach = run(RAdam, CASE["complex_param"], device=CUDA, foreach=True)
    assert all(torch.equal(p, q) for p, q in zip(default.params, foreach.params, strict=True))


@pytest.mark.parametrize("path", PATHS)
def test_cuda_float16_zero_gradients_do_not_turn_into_nan(path):
    theta = torch.nn.Parameter(torch.ones(4, dtype=torch.float16, device=CUDA))
    optimizer = RAdam([theta], lr=1e-2, **path)
    reference = torch.nn.Parameter(torch.ones(4, dtype=torch.float32))
    reference_optimizer = RAdam([reference], lr=1e-2, foreach=False)
    for _ in range(10):
        theta.grad = torch.tensor([0.0, 0.5, 1.0, -3.0], dtype=torch.float16, device=CUDA)
        reference.grad = theta.grad.float().cpu()
        optimizer.step()
        reference_optimizer.step()
    assert torch.isfinite(theta).all()
    assert torch.allclose(theta.float().cpu(), reference, atol=2e-3)


@pytest.mark.parametrize("path", PATHS)
def test_cuda_nonfinite_raise_updates_nothing(path):
    model = Model(seed=0).to(CUDA)
    optimizer = RAdam(model.named_parameters(), nonfinite_grad="raise", **path)
    for seed in range(7):
        backward(model, seed=seed)
        optimizer.step()
    backward(model, seed=7)
    model.out.bias.grad[1] = float("inf")
    before = snapshot(model.parameters(), optimizer)
    with pytest.raises(RuntimeError, match=r"in parameter 3 \('out.bias'\) of parameter group 0; nothing was updated"):
        optimizer.step()
    assert_same(snapshot(model.parameters(), optimizer), before)


# ------------------------------------------------------------------------------------------ mixed precision


@pytest.mark.parametrize("unscale_in_step", [False, True], ids=["lightning-unscales", "optimizer-unscales"])
def test_cuda_16_mixed_trainer_skips_the_overflowing_step(tmp_path, unscale_in_step):
    scaler = torch.amp.GradScaler(CUDA, init_scale=1.0)
    model = Model(
        lambda params: RAdam(params, lr=1e-2, betas=(0.9, 0.98), unscale_in_step=unscale_in_step), inf_at_step=2
    )
    callbacks = [RectificationMonitor(), GradientHistogramMonitor()]
    plugins = [MixedPrecision("16-mixed", CUDA, scaler=scaler)]
    trainer = make_trainer(tmp_path, callbacks, max_steps=6, accelerator=CUDA, plugins=plugins)
    trainer.fit(model)
    events = read_events(trainer.logger.log_dir)
    assert scalar_series(events, "radam/group0/skipped")[1].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert scalar_series(events, "radam/group0/step") == ([0, 1, 3, 4, 5], pytest.approx([1, 2, 3, 4, 5]))
    assert model.optimizers().optimizer.rectification_stats()[0].step == 5
    steps, nonfinite = scalar_series(events, "grad/nonfinite")
    assert steps == [0, 1, 2, 3, 4, 5]
    assert nonfinite[2] > 0
    assert nonfinite[[0, 1, 3, 4, 5]].sum() == 0


# ------------------------------------------------------------------------------------------------- histograms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_cuda_bucket_counts_equal_the_cpu_counts(dtype):
    gradients = known_gradients()
    values = torch.cat([gradients["w"], gradients["b"]]).to(dtype)  # subnormals, edges, zeros, inf and NaN
    on_cuda = log2_bucket_counts(values.to(CUDA))
    assert on_cuda.device.type == CUDA
    assert torch.equal(on_cuda.cpu(), log2_bucket_counts(values))
    assert on_cuda.sum().item() == values.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_sync_free_counting_equals_bincount(dtype):
    values = known_gradients()["w"].to(dtype).to(CUDA)
    bits = values.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)
    ids = torch.bitwise_right_shift(bits, 5 if dtype == torch.bfloat16 else 21).bitwise_and_(1023)
    sync_free = _count_ids(ids)  # the default off the CPU: index_add_, no synchronisation
    assert torch.equal(sync_free, _count_ids(ids, sync_free=False))  # torch.bincount on CUDA
    assert torch.equal(sync_free.cpu(), log2_bucket_counts(values.cpu()))


@pytest.mark.parametrize("monitor_kwargs", [{}, {"subsample": 3}], ids=["exact", "subsample3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_cuda_histogram_monitor_logs_what_the_cpu_logs(tmp_path, dtype, monitor_kwargs):
    """The same gradients binned on CUDA and on the CPU give the same events, and numpy's counts."""
    logs = {}
    for accelerator in ("cpu", CUDA):  # CUDA last: `model` and `trainer` are the CUDA run's below
        model = Model(gradients=known_gradients(), dtype=dtype)
        monitor = GradientHistogramMonitor(layers=r"^w$", **monitor_kwargs)
        trainer = make_trainer(tmp_path / f"run{len(logs)}", [monitor], max_steps=3, accelerator=accelerator)
        trainer.fit(model)
        logs[len(logs)] = event_log(trainer.logger.log_dir)
    assert model.w.device.type == CUDA
    assert logs[1] == logs[0]
    if not monitor_kwargs:
        events = read_events(trainer.logger.log_dir)
        w = binned_values(model.gradients["w"])
        assert_histogram_equals_numpy(events, "grad/layer/w/log10_abs", w, [0, 1, 2])


# ------------------------------------------------------------------------------------------ Lightning on CUDA


def test_cuda_trainer_fit_with_both_monitors(tmp_path):
    model = Model(seed=0)
    monitors = [RectificationMonitor(layers=r"\.weight$"), GradientHistogramMonitor(layers=r"\.weight$")]
    trainer = make_trainer(tmp_path, monitors, max_steps=8, accelerator=CUDA)
    trainer.fit(model)
    optimizer = trainer.optimizers[0]
    assert type(optimizer) is RAdam
    assert model.hidden.weight.device.type == CUDA
    assert optimizer.rectification_stats()[0].step == 8
    for state in optimizer.state.values():
        assert state["step"].device.type == "cpu"
        assert state["exp_avg"].device.type == CUDA
    events = read_events(trainer.logger.log_dir)
    assert_matches_math(events, "group0", 0.98, 5.0, list(range(8)))
    numel = sum(p.numel() for p in model.parameters())
    histograms = events.Histograms("grad/log10_abs")
    steps, zeros = scalar_series(events, "grad/zeros")
    assert [h.step for h in histograms] == steps == list(range(8))
    assert [h.histogram_value.num + z for h, z in zip(histograms, zeros, strict=True)] == [numel] * 8
    assert scalar_series(events, "grad/nonfinite")[1].tolist() == [0.0] * 8
    for name in ("hidden.weight", "out.weight"):
        assert [h.step for h in events.Histograms(f"grad/layer/{name}/log10_abs")] == list(range(8))
        assert scalar_series(events, f"radam/layer/{name}/adaptive_lr_log10_mean")[0] == list(range(8))
        assert scalar_series(events, f"radam/layer/{name}/rectified_lr_log10_mean")[0] == [5, 6, 7]


@pytest.mark.parametrize(
    "adam", [{"fused": True}, {"capturable": True}, {"foreach": True}], ids=["fused", "capturable", "foreach"]
)
def test_cuda_rectification_monitor_reads_adams_step_counts_on_the_device(tmp_path, adam):
    """torch's fused and capturable Adam keep ``step`` on the GPU: the monitor reads it there, on logging steps."""
    model = Model(two_groups(lambda groups: torch.optim.Adam(groups, lr=1e-3, **adam)))
    trainer = make_trainer(tmp_path, [RectificationMonitor(layers=r"\.weight$")], max_steps=7, accelerator=CUDA)
    trainer.fit(model)
    state_devices = {state["step"].device.type for state in trainer.optimizers[0].state.values()}
    assert state_devices == ({"cpu"} if "foreach" in adam else {CUDA})
    events = read_events(trainer.logger.log_dir)
    for g, beta2 in enumerate(BETA2S):
        assert_matches_math(events, f"group{g}", beta2, 5.0, list(range(7)))
    assert scalar_series(events, "radam/layer/hidden.weight/adaptive_lr_log10_mean")[0] == list(range(7))


@pytest.mark.parametrize("path", PATHS)
def test_cuda_step_never_synchronises_with_the_host(path):
    # rho_t, r_t and the step counts live on the host: neither an unrectified nor a rectified step waits for the GPU
    params = [torch.randn(shape, device=CUDA, requires_grad=True) for shape in ((64, 32), (32,), (4, 4, 3, 3))]
    optimizer = RAdam(params, lr=1e-3, **path)
    for _ in range(8):
        for p in params:
            p.grad = torch.randn_like(p)
        torch.cuda.set_sync_debug_mode("error")
        try:
            optimizer.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert optimizer.rectification_stats()[0].rectified
