r"""Log RAdam's rectification (rho_t, r_t) and the variance of the adaptive learning rate it controls."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_radam._checks import check_threshold
from lightning_radam._distributed import local_tensor
from lightning_radam.optim import RAdam
from lightning_radam.rectification import r_t, rho_t, variance_adaptive_lr, variance_adaptive_lr_first_order

from ._common import (
    EARLY_STEPS,
    _callbacks,
    _compile_pattern,
    _layers_match,
    _log_scalars,
    _logged_step,
    _optimizer_prefix,
    _StepMonitor,
    _tag_prefix,
    _tensorboard_loggers,
)
from ._distributed import mean_and_std_across_shards, std_mean
from .gradient_histogram_monitor import GradientHistogramMonitor
from .layout import monitoring_layout

__all__ = ["RectificationMonitor"]


def _is_radam(optimizer: torch.optim.Optimizer) -> TypeGuard[RAdam]:
    return callable(getattr(optimizer, "rectification_stats", None))


def _is_adam_like(optimizer: torch.optim.Optimizer) -> bool:
    """Adam, AdamW and other optimizers with ``betas`` and ``eps`` whose state holds ``step`` and ``exp_avg_sq``."""
    return all("betas" in group and "eps" in group for group in optimizer.param_groups)


def _group_step(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> int:
    """The most advanced step count in the group's state (0 before its first step).

    CPU step tensors (torch's default) are read without synchronisation; device-resident ones
    (``fused``/``capturable`` optimizers) synchronise once, and this is only called on logging steps.
    """
    # One state lookup per parameter, and is_cpu rather than device.type (a new string each time): this runs twice per
    # logged step for every parameter.
    steps = [state["step"] for state in map(optimizer.state.get, group["params"]) if state and "step" in state]
    if not steps:
        return 0
    on_device = [s.reshape(()) for s in steps if isinstance(s, Tensor) and not s.is_cpu]
    if not on_device:
        return int(max(map(float, steps)))
    numbers = [float(s) for s in steps if not (isinstance(s, Tensor) and not s.is_cpu)]
    numbers.append(float(torch.stack([t.to(on_device[0].device) for t in on_device]).max()))
    return int(max(numbers))


@dataclass
class _Pending:
    optimizer: torch.optim.Optimizer
    steps_before: list[int]


class RectificationMonitor(_StepMonitor):
    r"""Log RAdam's ``rho_t``, ``r_t`` and the variance of the adaptive learning rate, per parameter group.

    Logged on every optimizer step before ``early_steps`` (50), then every ``every_n_steps`` (by default the
    Trainer's ``log_every_n_steps``). On each logging step, for every parameter group of every optimizer:
    the step count ``t`` read from the optimizer's own state (a step that a GradScaler skips advances
    ``trainer.global_step`` but not ``t``, and is logged as ``skipped``), the length of the
    approximated simple moving average ``rho_t``, the rectification term ``r_t``, whether the
    step was rectified, and the theoretical variance of the adaptive learning rate at ``rho_t``
    (exact and first-order, per unit :math:`\sigma^2`) next to that of the rectified rate,
    :math:`r_t^2\,\mathrm{Var}[l](\rho_t)`: on a log scale the first falls by orders of magnitude
    over the first steps while the second stays within a factor of about 3 of its limit. All the maths is
    :mod:`lightning_radam.rectification`.

    With :class:`lightning_radam.RAdam` the values come from ``optimizer.rectification_stats()``
    and the groups' ``threshold``. With ``torch.optim.Adam``/``AdamW`` (any optimizer with
    ``betas`` whose state holds ``step`` and ``exp_avg_sq``) it reports what RAdam would have
    applied at the same step, with ``threshold``: a diagnosis of an existing Adam run.

    For the parameters whose names match ``layers`` it also logs an empirical statistic of the
    actual adaptive learning rate :math:`l = \sqrt{1-\beta_2^t}/(\sqrt{v_t}+\epsilon)` (RAdam's form),
    computed on the parameters' device after the step: the mean and standard deviation of
    :math:`\log_{10} l` across the parameter's elements, and the mean of :math:`\log_{10}(r_t l)`,
    the rate a rectified step applies (multiplying by :math:`r_t` shifts the log, so the spread is
    the same before and after rectification). Under sharded training (FSDP2: DTensor parameters) every rank
    computes them on its own shard on the logging steps, and the sums are added across the ranks that hold the
    shards; rank zero writes.

    A logged step's values reach a TensorBoardLogger as one event, written in the training thread; setting up the
    monitor makes TensorBoard's event writer checksum its records in C (``google-crc32c``) instead of pure Python,
    process-wide (the same bytes).

    Logged names (``{opt}`` is empty with one optimizer and ``optimizer{i}/`` with several;
    ``{g}`` is the parameter group's index):

    - ``radam/{opt}group{g}/skipped``: 1.0 if the group's step count did not advance in this
      optimizer step (GradScaler skipped it, or no parameter had a gradient), else 0.0. On a
      skipped step nothing else is logged for the group, so no step ``t`` appears twice.
    - ``radam/{opt}group{g}/step``: the step count ``t`` of the group's most advanced parameter.
    - ``radam/{opt}group{g}/rho_t``, ``radam/{opt}group{g}/r_t`` (0 where ``rho_t <= 4``),
      ``radam/{opt}group{g}/rectified`` (1.0 if ``rho_t > threshold``).
    - ``radam/{opt}group{g}/var_adaptive_lr``, ``radam/{opt}group{g}/var_adaptive_lr_first_order``,
      ``radam/{opt}group{g}/var_rectified_lr``: only where ``rho_t > 4`` (where ``r_t`` and the
      first-order form are defined), and their log10 as ``..._log10`` (the tags the custom-scalars
      layout charts, as TensorBoard's axes open linear).
    - ``radam/layer/{name}/adaptive_lr_log10_mean``, ``radam/layer/{name}/adaptive_lr_log10_std``
      and, on rectified steps, ``radam/layer/{name}/rectified_lr_log10_mean``: for parameters
      matching ``layers``.

    The step of every point is ``trainer.fit_loop.epoch_loop._batches_that_stepped``, the step
    ``self.log`` uses. Scalars go to every logger in ``trainer.loggers``, from rank zero; with a
    ``TensorBoardLogger`` the custom-scalars layout :func:`~lightning_radam.callbacks.monitoring_layout`
    is written once at fit start, with only the charts of tags this run logs (per-layer charts if ``layers``
    matches a parameter, gradient counts for each GradientHistogramMonitor of the Trainer).
    Nothing synchronises on steps that are not logged. A Trainer takes one RectificationMonitor: it covers every
    optimizer, and Lightning refuses a second (a ``RuntimeError`` about "more than one stateful callback"), which
    would write the same tags.

    Args:
        every_n_steps: after the early phase, log on optimizer steps whose index is a multiple of this;
            ``None`` for the Trainer's ``log_every_n_steps`` (default: None).
        early_steps: log every optimizer step from step 0 up to this step (excluded), which covers the
            unrectified steps and the steepest fall of the variance; 0 for none (default: 50).
        layers: regular expression searched in parameter names (``re.search``) selecting the
            parameters whose empirical adaptive learning rate is logged (a pattern that matches no parameter
            warns at fit start); ``None`` for none (default: None).
        threshold: ``rho_t`` above which RAdam rectifies, used for optimizers other than
            :class:`~lightning_radam.RAdam` (which carry their own), >= 4 (default: 5.0, as torch).
        write_layout: write the custom-scalars layout to TensorBoard at fit start (default: True).

    Raises:
        ValueError: if ``every_n_steps`` < 1, ``early_steps`` < 0, ``threshold`` < 4 or not finite, or ``layers`` is not
            a valid regular expression.
        TypeError: if an argument has the wrong type.
        MisconfigurationException: at fit start, if the Trainer has no logger.

    Example:
        >>> from lightning import Trainer
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from lightning_radam.callbacks import RectificationMonitor
        >>> monitor = RectificationMonitor(layers=r"\.weight$")  # per-layer statistics of the weights
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[monitor], max_steps=1000)
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        early_steps: int = EARLY_STEPS,
        layers: str | None = None,
        threshold: float = 5.0,
        write_layout: bool = True,
    ) -> None:
        super().__init__(every_n_steps, early_steps)
        self.layers = _compile_pattern(layers, "layers")
        self.threshold = check_threshold(threshold)
        if not isinstance(write_layout, bool):
            raise TypeError(f"Invalid write_layout: expected a bool, got {write_layout!r}")
        self.write_layout = write_layout
        self._pending: dict[int, _Pending] = {}
        self._warned: set[int] = set()

    def __repr__(self) -> str:
        layers = None if self.layers is None else self.layers.pattern
        schedule = f"every_n_steps={self.every_n_steps}, early_steps={self.early_steps}"
        return f"{type(self).__name__}({schedule}, layers={layers!r})"

    @override
    def _reset(self) -> None:
        super()._reset()
        self._pending = {}  # a step of the last fit that raised before its batch ended

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        layers = _layers_match(self, self.layers, self._names)
        if self.write_layout and trainer.is_global_zero:
            prefixes = [c.prefix for c in _callbacks(trainer) if isinstance(c, GradientHistogramMonitor)]
            monitored = any(_is_radam(optimizer) or _is_adam_like(optimizer) for optimizer in trainer.optimizers)
            for logger in _tensorboard_loggers(trainer):
                layout = monitoring_layout(
                    layers=layers and monitored, gradient_prefixes=prefixes, rectification=monitored,
                    tag_prefix=_tag_prefix(logger),
                )  # fmt: skip
                if layout:
                    logger.experiment.add_custom_scalars(layout)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        logging = self._logging_step(trainer, optimizer)
        if logging is None or logging[1] in self._pending:
            return  # a second step of the same optimizer in one batch (manual optimization) keeps the first count
        index = logging[1]
        if not (_is_radam(optimizer) or _is_adam_like(optimizer)):
            if index not in self._warned:
                self._warned.add(index)
                rank_zero_warn(
                    f"RectificationMonitor: optimizer {index} ({type(optimizer).__name__}) has no betas/second moment; "
                    "it is not monitored."
                )
            return
        self._pending[index] = _Pending(optimizer, [_group_step(optimizer, group) for group in optimizer.param_groups])

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._pending:
            return
        step = _logged_step(trainer)
        pending, self._pending = self._pending, {}
        metrics: dict[str, float] = {}
        layer_stats: list[tuple[Tensor, int, Tensor]] = []  # per layer: (std, mean) of log10 l, its numel, v_t
        layer_rows: list[tuple[str, float]] = []
        variances: dict[float, tuple[float, float]] = {}  # rho_t -> the exact and first-order variances
        for index, item in pending.items():
            self._last_logged[index] = step
            optimizer = item.optimizer
            stats = optimizer.rectification_stats() if _is_radam(optimizer) else None
            for g, group in enumerate(optimizer.param_groups):
                key = f"radam/{_optimizer_prefix(trainer, index)}group{g}/"
                t = _group_step(optimizer, group)
                skipped = t <= item.steps_before[g]
                metrics[key + "skipped"] = float(skipped)
                if skipped:
                    continue
                beta2 = group["betas"][1]
                threshold = group.get("threshold", self.threshold) if stats is not None else self.threshold
                recorded = stats[g] if stats is not None else None
                if recorded is not None and recorded.step == t:
                    rho, r, rectified = recorded.rho_t, recorded.r_t, recorded.rectified
                else:
                    rho, r = rho_t(t, beta2), r_t(t, beta2)
                    rectified = rho > threshold
                metrics.update(
                    {key + "step": float(t), key + "rho_t": rho, key + "r_t": r, key + "rectified": float(rectified)}
                )
                if rho > 4.0:
                    if rho not in variances:  # groups with the same step and beta2 (RAdamMixin's two) share them
                        variances[rho] = (variance_adaptive_lr(rho), variance_adaptive_lr_first_order(rho))
                    variance, first_order = variances[rho]
                    metrics[key + "var_adaptive_lr"] = variance
                    metrics[key + "var_adaptive_lr_first_order"] = first_order
                    metrics[key + "var_rectified_lr"] = r * r * variance
                    for name in ("var_adaptive_lr", "var_adaptive_lr_first_order", "var_rectified_lr"):
                        metrics[key + name + "_log10"] = math.log10(metrics[key + name])
                if self.layers is not None:
                    self._layer_statistics(optimizer, group, threshold, layer_stats, layer_rows)
        if layer_stats:  # (mean, std) of log10 l per layer, from the sums over each rank's shard under FSDP2
            std_means, numels, likes = zip(*layer_stats, strict=True)
            values = mean_and_std_across_shards(list(std_means), list(numels), list(likes))
            for (name, log10_r), (mean, std) in zip(layer_rows, values, strict=True):
                metrics[f"radam/layer/{name}/adaptive_lr_log10_mean"] = mean
                metrics[f"radam/layer/{name}/adaptive_lr_log10_std"] = std
                if log10_r is not None:
                    metrics[f"radam/layer/{name}/rectified_lr_log10_mean"] = mean + log10_r
        if trainer.is_global_zero:  # under FSDP2 every rank computes, rank zero writes
            _log_scalars(trainer, metrics, step)

    @torch.no_grad()
    def _layer_statistics(
        self, optimizer: torch.optim.Optimizer, group: dict[str, Any], threshold: float, out: list, rows: list
    ) -> None:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            name = self._names.get(id(p))
            state = optimizer.state.get(p, {})
            if (
                name is None
                or self.layers is None
                or not self.layers.search(name)
                or "exp_avg_sq" not in state
                or "step" not in state
            ):
                continue
            t = int(float(state["step"]))  # this parameter's own count (it may lag behind the group's)
            if t < 1:
                continue
            # sqrt(1 - beta2^t) / (sqrt(v_t) + eps), in float32 at least, on the device of (this rank's shard of) v_t
            exp_avg_sq = local_tensor(state["exp_avg_sq"])
            log10_lr = exp_avg_sq.float().sqrt().add_(eps).reciprocal_().mul_(math.sqrt(1.0 - beta2**t)).log10_()
            out.append((std_mean(log10_lr), log10_lr.numel(), state["exp_avg_sq"]))
            rectified = rho_t(t, beta2) > threshold
            rows.append((name, math.log10(r_t(t, beta2)) if rectified else None))
