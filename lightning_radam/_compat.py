"""Every private name of torch and Lightning that lightning-radam relies on, in one place.

Each entry says what we rely on; ``tests/test_compat.py`` checks that behaviour on a tiny input, so
an upstream change fails there, by name, rather than somewhere inside a training run. Where a
private name can go missing at run time, the code here degrades to public behaviour:

- ``torch._fused_adam_`` / ``torch._fused_adamw_`` (RAdam's fused path): probed once, on import,
  against Adam's update on a tiny float64 input. If a kernel is missing or computes something else,
  :func:`fused_adam` returns ``None``, warns once, and RAdam's fused path runs the foreach path.
- ``optimizer._step_supports_amp_scaling`` and the ``grad_scale``/``found_inf`` attributes that
  ``torch.amp.GradScaler.step`` sets on such an optimizer (RAdam's ``unscale_in_step``).
- ``lightning.fabric.plugins.precision.amp._optimizer_handles_unscaling`` (the histogram monitor:
  are gradients still scaled in ``on_before_optimizer_step``?); falls back to reading the flag above.
- ``trainer.fit_loop.epoch_loop._batches_that_stepped`` (the monitors: the step ``self.log`` uses);
  falls back to ``trainer.global_step``, equal to it with one optimizer in automatic optimization.
- ``logger._prefix`` of Lightning's loggers (their ``prefix`` argument, which ``log_metrics`` puts before every
  name): the monitors write the scalars of a step as one event to a TensorBoardLogger without a prefix; where it
  cannot be read, :func:`logger_prefix` returns ``None`` and they go through ``log_metrics``, one event per scalar.
- ``torch.nn.modules.batchnorm._NormBase`` (the mixin: batch and instance norms are not decayed);
  falls back to the public batch and instance norm classes.

torch.optim's ``torch._foreach_*`` operations, used the way ``torch.optim`` uses them, are not listed.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "AMP_SCALING_FLAG",
    "NORM_BASES",
    "amp_scaling_inputs",
    "batches_that_stepped",
    "fused_adam",
    "logger_prefix",
    "optimizer_handles_unscaling",
]

# ------------------------------------------------------------------------------------------------------------------
# torch's fused Adam kernels

#: ``kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, amsgrad, lr, beta1, beta2,
#: weight_decay, eps, maximize, grad_scale, found_inf)``, in place, as ``torch._fused_adam_``.
FusedAdam = Callable[..., None]

_FUSED_KERNELS = {False: "_fused_adam_", True: "_fused_adamw_"}


def _expected_adam_step(decoupled_weight_decay: bool, **h: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Adam's update as torch.optim.Adam/AdamW document it, in float64: what the fused path relies on."""
    param, grad, exp_avg, exp_avg_sq = (t.clone() for t in (h["param"], h["grad"], h["exp_avg"], h["exp_avg_sq"]))
    lr, beta1, beta2, weight_decay, eps, step = (h[k] for k in ("lr", "beta1", "beta2", "weight_decay", "eps", "step"))
    grad = grad / h["grad_scale"]
    if h["maximize"]:
        grad = -grad
    if decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    else:
        grad = grad + weight_decay * param
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    # step size lr / (1 - b1^t); eps after the bias correction of sqrt(v): sqrt(v) / sqrt(1 - b2^t) + eps
    denom = exp_avg_sq.sqrt() / math.sqrt(1 - beta2**step) + eps
    param = param - lr / (1 - beta1**step) * exp_avg / denom
    return param, exp_avg, exp_avg_sq


def _probe_fused_adam(decoupled_weight_decay: bool) -> str | None:
    """Run the kernel once on two float64 elements; ``None`` if it computes Adam's step, otherwise what went wrong."""
    name = _FUSED_KERNELS[decoupled_weight_decay]
    kernel = getattr(torch, name, None)
    if kernel is None:
        return f"torch.{name} does not exist"
    cpu = functools.partial(torch.tensor, dtype=torch.float64, device="cpu")  # the CPU kernel, whatever the default
    h: dict[str, Any] = dict(
        param=cpu([1.0, -2.0]), grad=cpu([1.0, -0.5]), exp_avg=cpu([0.1, -0.2]), exp_avg_sq=cpu([0.01, 0.04]),
        lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.1, eps=1e-3, step=3, maximize=True, grad_scale=2.0,
    )  # fmt: skip
    param, grad, exp_avg, exp_avg_sq = (h[k].clone() for k in ("param", "grad", "exp_avg", "exp_avg_sq"))
    step = torch.tensor(float(h["step"]), device="cpu")  # read, not incremented, by the kernel
    try:
        kernel(
            [param], [grad], [exp_avg], [exp_avg_sq], [], [step], amsgrad=False, lr=h["lr"], beta1=h["beta1"],
            beta2=h["beta2"], weight_decay=h["weight_decay"], eps=h["eps"], maximize=h["maximize"],
            grad_scale=torch.tensor(h["grad_scale"], device="cpu"), found_inf=None,
        )  # fmt: skip
    except Exception as error:  # any failure means the contract is not there
        return f"torch.{name} failed on a tiny input: {type(error).__name__}: {error}"
    expected = _expected_adam_step(decoupled_weight_decay, **h)
    for what, actual, wanted in zip(
        ("param", "exp_avg", "exp_avg_sq"), (param, exp_avg, exp_avg_sq), expected, strict=True
    ):
        if not torch.allclose(actual, wanted, rtol=1e-12, atol=0.0):
            return f"torch.{name} computed {what} {actual.tolist()}, Adam's update gives {wanted.tolist()}"
    if step.item() != h["step"]:
        return f"torch.{name} changed the step count from {h['step']} to {step.item()}"
    return None


def _fused_adam_works(decoupled_weight_decay: bool) -> bool:
    problem = _probe_fused_adam(decoupled_weight_decay)
    if problem is not None:
        warnings.warn(
            f"{problem}; RAdam's fused path runs the foreach path instead (it agrees to round-off, more slowly)",
            RuntimeWarning,
            stacklevel=2,
        )
    return problem is None


# Checked once, on import (about a millisecond), so that torch.compile never traces the probe.
_FUSED_ADAM_WORKS = {decoupled: _fused_adam_works(decoupled) for decoupled in (False, True)}


def fused_adam(decoupled_weight_decay: bool) -> FusedAdam | None:
    """torch's fused Adam (``decoupled_weight_decay=False``) or AdamW kernel, or ``None`` where it does not compute
    Adam's update (checked once per process, on import, on two float64 elements on the CPU).

    The contract, per element, in float32 for lower-precision tensors (``t`` is read from ``state_steps``, which
    the kernel does not increment; ``grad`` is divided by ``grad_scale`` and negated with ``maximize``)::

        Adam:  g = grad + weight_decay * theta;   AdamW: theta *= 1 - lr * weight_decay, g = grad
        m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
        theta -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """
    if not _FUSED_ADAM_WORKS[decoupled_weight_decay]:
        return None
    return cast(FusedAdam, getattr(torch, _FUSED_KERNELS[decoupled_weight_decay]))  # looked up when called


# ------------------------------------------------------------------------------------------------------------------
# torch.amp.GradScaler's protocol with optimizers that unscale in step()

#: An optimizer attribute read by ``torch.amp.GradScaler.step`` (and Lightning): when True, the scaler neither
#: unscales the gradients nor skips ``step()`` on inf/NaN, but sets ``optimizer.grad_scale`` (unless the user
#: called ``unscale_`` first) and ``optimizer.found_inf`` (a 1-element tensor) before calling ``step()``.
AMP_SCALING_FLAG = "_step_supports_amp_scaling"


def amp_scaling_inputs(optimizer: torch.optim.Optimizer) -> tuple[Tensor | None, Tensor | None]:
    """``(grad_scale, found_inf)`` as ``torch.amp.GradScaler.step`` left them on ``optimizer`` (``None`` if not)."""
    return getattr(optimizer, "grad_scale", None), getattr(optimizer, "found_inf", None)


def optimizer_handles_unscaling(optimizer: Any) -> bool:
    """Whether Lightning's AMP plugin leaves unscaling to ``optimizer.step`` (gradients are still scaled in
    ``on_before_optimizer_step``)."""
    try:
        from lightning.fabric.plugins.precision.amp import _optimizer_handles_unscaling
    except ImportError:
        return bool(getattr(optimizer, AMP_SCALING_FLAG, False))
    return bool(_optimizer_handles_unscaling(optimizer))


# ------------------------------------------------------------------------------------------------------------------
# Lightning's loops


def batches_that_stepped(trainer: pl.Trainer) -> int:
    """The step index ``LightningModule.log`` gives the loggers during a training batch: the number of batches
    after which an optimizer stepped so far (``trainer.global_step`` counts every optimizer's steps)."""
    steps = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped", None)  # read on every step of the fit
    return int(trainer.global_step if steps is None else steps)


def summary_file_writer(writer: Any) -> Any:
    """The ``FileWriter`` under a ``SummaryWriter`` (torch's or tensorboardX's), opened again if it was closed."""
    return writer._get_file_writer()


def log_every_n_steps(trainer: pl.Trainer) -> int:
    """The Trainer's ``log_every_n_steps`` (0 turns Lightning's logging off), set by its logger connector."""
    return int(getattr(trainer, "log_every_n_steps", 50))


# ------------------------------------------------------------------------------------------------------------------
# Lightning's loggers


def logger_prefix(logger: Any) -> str | None:
    """The ``prefix`` that ``logger.log_metrics`` puts before every metric name (joined with
    ``logger.LOGGER_JOIN_CHAR``; ``""`` for none), or ``None`` if the logger keeps none we can read."""
    prefix = getattr(logger, "_prefix", None)
    return prefix if isinstance(prefix, str) else None


# ------------------------------------------------------------------------------------------------------------------
# torch.nn

_PUBLIC_NORM_BASES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LazyBatchNorm1d, nn.LazyBatchNorm2d, nn.LazyBatchNorm3d,
    nn.LazyInstanceNorm1d, nn.LazyInstanceNorm2d, nn.LazyInstanceNorm3d,
)  # fmt: skip

#: The common base of every batch and instance norm (``torch.nn.modules.batchnorm._NormBase``, which user-defined
#: subclasses also share), or the public classes if torch renames it.
NORM_BASES: tuple[type[nn.Module], ...] = (
    (nn.modules.batchnorm._NormBase,) if hasattr(nn.modules.batchnorm, "_NormBase") else _PUBLIC_NORM_BASES
)
