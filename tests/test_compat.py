"""Every private upstream name in ``lightning_radam._compat``, checked for the behaviour we rely on.

When torch or Lightning changes one of them, the test named after it fails here; the fused kernel's
fallback (the foreach path, with a warning) is tested too.
"""

import math
import subprocess
import sys

import lightning as L
import pytest
import torch
from helpers import Model, make_trainer, read_events
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lightning_radam import RAdam, _compat

# ---------------------------------------------------------------------------------------------------------------------
# torch._fused_adam_ / torch._fused_adamw_


def _adam_by_hand(theta, g, m, v, *, t, lr, beta1, beta2, weight_decay, eps, decoupled):
    """One element of Adam (AdamW when ``decoupled``) in Python floats, as torch.optim.Adam documents it."""
    if decoupled:
        theta *= 1 - lr * weight_decay
    else:
        g += weight_decay * theta
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    theta -= lr / (1 - beta1**t) * m / (math.sqrt(v) / math.sqrt(1 - beta2**t) + eps)
    return theta, m, v


@pytest.mark.parametrize("decoupled", [False, True], ids=["_fused_adam_", "_fused_adamw_"])
def test_compat_fused_adam_kernel_computes_adams_update(decoupled):
    kernel = _compat.fused_adam(decoupled)
    assert kernel is not None, "the probe in lightning_radam._compat rejected torch's fused kernel: see its warning"
    hyper = dict(lr=0.05, beta1=0.8, beta2=0.95, weight_decay=0.2, eps=1e-4)
    theta, g, m, v, t = [0.5, -1.5], [0.25, 2.0], [0.0, 0.3], [0.0, 0.5], 4
    tensors = [torch.tensor(x, dtype=torch.float64) for x in (theta, g, m, v)]
    step = torch.tensor(float(t))
    kernel(*([x] for x in tensors), [], [step], amsgrad=False, maximize=False, grad_scale=None, found_inf=None, **hyper)
    for i in range(2):
        expected = _adam_by_hand(theta[i], g[i], m[i], v[i], t=t, decoupled=decoupled, **hyper)
        assert [x[i].item() for x in (tensors[0], tensors[2], tensors[3])] == pytest.approx(expected, rel=1e-14)
    assert step.item() == t  # the kernel reads the step count; RAdam increments it


def test_compat_fused_adam_kernel_reads_float16_second_moment_before_rounding():
    # What keeps RAdam's paths equal in float16: (1 - b2) g^2 = 1e-9 is 0 in float16, yet the step divides by it.
    kernel = _compat.fused_adam(False)
    theta, g, m, v = (torch.tensor([x], dtype=torch.float16) for x in (0.0, 1e-3, 0.0, 0.0))
    kernel([theta], [g], [m], [v], [], [torch.tensor(1.0)], amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999,
           weight_decay=0.0, eps=1e-8, maximize=False, grad_scale=None, found_inf=None)  # fmt: skip
    assert v.item() == 0.0
    g32 = float(g)  # m_hat / (sqrt(v_hat) + eps) = g / |g| at t = 1: a step of lr
    assert theta.item() == pytest.approx(-1e-3 * g32 / (math.sqrt(1e-3 * g32**2) / math.sqrt(1e-3) + 1e-8), rel=1e-3)


@pytest.mark.parametrize(
    ("replacement", "problem"),
    [
        (None, "does not exist"),
        (lambda params, grads, exp_avgs, exp_avg_sqs, steps, **kwargs: None, "failed on a tiny input: TypeError"),
        (lambda *args, **kwargs: None, "computed param"),  # runs, but does not update
    ],
    ids=["missing", "other_signature", "other_formula"],
)
def test_compat_fused_adam_probe_rejects_a_changed_kernel_with_a_warning(monkeypatch, replacement, problem):
    if replacement is None:
        monkeypatch.delattr(torch, "_fused_adam_")
    else:
        monkeypatch.setattr(torch, "_fused_adam_", replacement)
    assert problem in _compat._probe_fused_adam(False)
    with pytest.warns(RuntimeWarning, match=f"_fused_adam_.*{problem}.*runs the foreach path instead"):
        assert not _compat._fused_adam_works(False)
    assert _compat._probe_fused_adam(True) is None  # the AdamW kernel is untouched


def test_compat_eps_added_inside_the_square_root_is_another_formula(monkeypatch):
    original = torch._fused_adam_

    def eps_inside(*args, eps, **kwargs):
        original(*args, eps=eps * eps, **kwargs)  # sqrt(v) + eps -> about sqrt(v) + eps^2: a different update

    monkeypatch.setattr(torch, "_fused_adam_", eps_inside)
    assert "computed param" in _compat._probe_fused_adam(False)


@pytest.mark.parametrize("decoupled_weight_decay", [False, True])
@pytest.mark.parametrize("fused", [None, True])
def test_compat_without_a_usable_fused_kernel_radam_takes_the_foreach_path(monkeypatch, fused, decoupled_weight_decay):
    monkeypatch.setattr(_compat, "_FUSED_ADAM_WORKS", {False: False, True: False})
    for name in ("_fused_adam_", "_fused_adamw_"):
        monkeypatch.setattr(torch, name, lambda *args, **kwargs: pytest.fail("the fused kernel was called"))
    params = {}
    for path, kwargs in (("fallback", dict(fused=fused)), ("foreach", dict(foreach=True))):
        generator = torch.Generator().manual_seed(0)
        theta = torch.nn.Parameter(torch.randn(4, 3, generator=generator))
        optimizer = RAdam([theta], lr=1e-2, weight_decay=0.1, decoupled_weight_decay=decoupled_weight_decay, **kwargs)
        for _ in range(8):
            theta.grad = torch.randn(4, 3, generator=generator)
            optimizer.step()
        params[path] = theta.detach()
    assert torch.equal(params["fallback"], params["foreach"])


# ---------------------------------------------------------------------------------------------------------------------
# torch.amp.GradScaler and optimizer._step_supports_amp_scaling


class _Recorder(torch.optim.SGD):
    """SGD that records what GradScaler.step handed to step(): the gradient, grad_scale and found_inf."""

    def __init__(self, params, handles_unscaling):
        super().__init__(params, lr=0.0)
        setattr(self, _compat.AMP_SCALING_FLAG, handles_unscaling)
        self.calls = []

    def step(self, closure=None):
        grad_scale, found_inf = _compat.amp_scaling_inputs(self)
        grad = self.param_groups[0]["params"][0].grad.clone()
        self.calls.append((grad, grad_scale, None if found_inf is None else found_inf.item()))


@pytest.mark.parametrize("handles_unscaling", [False, True])
def test_compat_grad_scaler_hands_scale_and_found_inf_to_a_flagged_optimizer(handles_unscaling):
    theta = torch.nn.Parameter(torch.ones(2))
    optimizer = _Recorder([theta], handles_unscaling)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    for factor in (1.0, math.inf):
        optimizer.zero_grad()
        scaler.scale((theta * torch.tensor([3.0, factor])).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    if handles_unscaling:  # step() runs on every step, with the gradients still scaled, and decides itself
        (grad, scale, found), (_, _, found_inf) = optimizer.calls
        assert grad.tolist() == [24.0, 8.0]
        assert (scale.item(), found, found_inf) == (8.0, 0.0, 1.0)
    else:  # the scaler unscales, and skips step() on inf/NaN
        ((grad, scale, found),) = optimizer.calls
        assert grad.tolist() == [3.0, 1.0]
        assert (scale, found) == (None, None)


@pytest.mark.parametrize("unscale_in_step", [False, True])
def test_compat_optimizer_handles_unscaling_matches_lightnings_amp_plugin(tmp_path, unscale_in_step):
    """Whether Lightning leaves the gradients scaled in on_before_optimizer_step, as the histogram monitor assumes."""

    class Grads(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.handles = _compat.optimizer_handles_unscaling(optimizer)
            self.grad = pl_module.out.bias.grad.clone()

    grads = {}
    for scale in (1.0, 2.0**10):
        L.seed_everything(0)
        callback = Grads()
        model = Model(lambda params: RAdam(params, unscale_in_step=unscale_in_step))
        plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale))
        make_trainer(tmp_path / str(scale), [callback], max_steps=1, logger=False, plugins=[plugin]).fit(model)
        assert callback.handles == unscale_in_step
        grads[scale] = callback.grad
    expected = grads[1.0] * (2.0**10 if unscale_in_step else 1.0)
    torch.testing.assert_close(grads[2.0**10], expected, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# trainer.fit_loop.epoch_loop._batches_that_stepped


class _StepLogger(Logger):
    """Records the steps Lightning hands to the logger with each metric (it sends a metric again on later steps)."""

    def __init__(self):
        super().__init__()
        self.steps = {}

    name, version = "steps", 0

    def log_metrics(self, metrics, step=None):
        for key in metrics:
            if key.startswith("batch"):
                self.steps.setdefault(int(key.removeprefix("batch")), []).append(step)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


def test_compat_batches_that_stepped_is_the_step_that_self_log_uses(tmp_path):
    read = {}

    class LoggingModel(Model):
        def training_step(self, batch, batch_idx):
            read[batch_idx] = _compat.batches_that_stepped(self.trainer)
            self.log(f"batch{batch_idx}", float(batch_idx), on_step=True, on_epoch=False)
            return super().training_step(batch, batch_idx)

    logger = _StepLogger()
    trainer = make_trainer(tmp_path, [], max_steps=3, logger=logger, accumulate_grad_batches=2)
    trainer.fit(LoggingModel())
    assert read == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 2}  # optimizer steps before the batch, not batches
    assert {batch: steps[0] for batch, steps in logger.steps.items()} == read  # first sent at the step read
    assert trainer.global_step == _compat.batches_that_stepped(trainer) == 3


# ---------------------------------------------------------------------------------------------------------------------
# Lightning's loggers: _prefix


@pytest.mark.parametrize("logger_class", [TensorBoardLogger, CSVLogger])
@pytest.mark.parametrize("prefix", ["", "run"])
def test_compat_logger_prefix_is_what_log_metrics_puts_before_every_name(tmp_path, logger_class, prefix):
    logger = logger_class(tmp_path, name="", version=0, prefix=prefix)
    assert _compat.logger_prefix(logger) == prefix
    logger.log_metrics({"a/b": 1.5}, step=3)
    logger.finalize("success")
    expected = f"{prefix}{logger.LOGGER_JOIN_CHAR}a/b" if prefix else "a/b"
    if logger_class is TensorBoardLogger:
        assert read_events(logger.log_dir).Tags()["scalars"] == [expected]
    else:
        assert (tmp_path / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",") == [expected, "step"]


# ---------------------------------------------------------------------------------------------------------------------
# torch.nn.modules.batchnorm._NormBase


def _public_batch_and_instance_norms():
    return [
        cls
        for name, cls in vars(nn).items()
        if isinstance(cls, type) and issubclass(cls, nn.Module) and ("BatchNorm" in name or "InstanceNorm" in name)
    ]


def test_compat_norm_bases_are_the_base_of_every_batch_and_instance_norm():
    norms = _public_batch_and_instance_norms()
    assert len(norms) >= 13  # BatchNorm1d-3d, SyncBatchNorm, InstanceNorm1d-3d and their Lazy variants
    assert _compat.NORM_BASES[0] is nn.modules.batchnorm._NormBase  # not the fallback, on the versions we test
    for cls in norms:
        assert issubclass(cls, _compat.NORM_BASES), cls
        assert cls in _compat._PUBLIC_NORM_BASES, f"{cls} is missing from the fallback"
    for cls in (nn.LayerNorm, nn.GroupNorm, nn.Linear, nn.Embedding):
        assert not issubclass(cls, _compat.NORM_BASES), cls
    assert isinstance(nn.BatchNorm1d(3), _compat.NORM_BASES)


# ---------------------------------------------------------------------------------------------------------------------
# torch.set_default_device: the host-side tensors (the import-time probe, step counts, masks) stay on the CPU

_DEFAULT_DEVICE_SCRIPT = """
import numpy as np, torch
torch.set_default_device("meta")  # a device no CPU tensor can meet: any host-side tensor created on it fails
from lightning_radam import RAdam, _compat
from lightning_radam._distributed import _ShardSum
from lightning_radam.callbacks.gradient_histogram_monitor import log2_bucket_counts
from lightning_radam.rectification import r_t

def run(fused):
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0], device="cpu"))
    optimizer = RAdam([param], lr=0.1, fused=fused)
    for t in range(8):
        param.grad = torch.tensor([0.5, -1.0, 2.0], device="cpu") * (t + 1)
        optimizer.step()
    assert optimizer.state[param]["step"].device.type == "cpu", optimizer.state[param]["step"]
    return param.detach().clone()

assert all(_compat._FUSED_ADAM_WORKS.values())
params = [run(fused) for fused in (None, True)]
values = torch.tensor([1.0, 1.3, -1.6, 0.0], device="cpu")
counts = log2_bucket_counts(values)[[0, 508, 509, 510]].tolist()
rectified = r_t(np.array([6.0, 100.0]), 0.999)
metric = _ShardSum(None)
metric.update(torch.tensor([2, 3], device="cpu"))
total = metric.compute().tolist()
torch.set_default_device(None)
assert [p.tolist() for p in params] == [p.tolist() for p in (run(None), run(True))]
assert counts == [1, 1, 1, 1], counts
assert isinstance(rectified, np.ndarray) and np.array_equal(rectified, r_t(np.array([6.0, 100.0]), 0.999))
assert total == [2, 3], total
print("ok")
"""


def test_host_side_tensors_stay_on_the_cpu_whatever_the_default_device():
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", _DEFAULT_DEVICE_SCRIPT],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok", result.stdout
