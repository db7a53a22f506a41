"""``RAdamMixin``: a LightningModule gets ``configure_optimizers`` building RAdam from its hyperparameters."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_radam._checks import check_betas, check_choice, check_fraction, check_warmup, shown_repr
from lightning_radam._compat import NORM_BASES
from lightning_radam.baselines import _exponential_factor, _linear_factor, _untuned_warmup_steps
from lightning_radam.optim import RAdam

__all__ = ["RAdamMixin", "NORM_LAYERS"]

#: Module types whose parameters are never weight-decayed.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    *NORM_BASES,  # every batch and instance norm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_OPTIMIZER_KEYS = (
    "lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "threshold", "degenerated_to_sgd",
    "foreach", "fused", "nonfinite_grad", "unscale_in_step",
)  # fmt: skip
_SCHEDULES = (None, "none", "cosine", "linear")


def _check_plain(value: Any, where: str, key: str, seen: frozenset[int] = frozenset()) -> None:
    """Raise if ``value`` is or holds (in a list, tuple, set or dict) a class or a callable."""
    if isinstance(value, type) or callable(value):
        raise TypeError(
            f"Invalid {where}: {shown_repr(value)} is a class or callable, which torch.load(weights_only=True) "
            f"cannot load from a checkpoint; store plain values, or save_hyperparameters(ignore=[{key!r}])"
        )
    if id(value) in seen:  # a container that holds itself
        return
    if isinstance(value, Mapping):
        for name, item in value.items():
            _check_plain(item, f"{where}[{name!r}]", key, seen | {id(value)})
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", key, seen | {id(value)})


def _warmup(warmup: int | str, betas: Any) -> tuple[str, float, float]:
    """``(shape, warmup_steps, rate)`` of :class:`_Schedule` for a checked ``warmup`` (``betas``: for untuned ones)."""
    if not isinstance(warmup, str):
        return ("linear", warmup, 0.0) if warmup else ("none", 0, 0.0)
    beta2 = check_betas(betas)[1]
    steps = _untuned_warmup_steps(beta2)
    return ("exponential", steps, 1.0 - beta2) if warmup == "untuned_exponential" else ("linear", steps, 0.0)


def _is_bias(name: str) -> bool:
    """Whether a parameter's own name (not its module path) names a bias as torch.nn does: ``bias`` (Linear, Conv...),
    ``in_proj_bias``, ``bias_k`` and ``bias_v`` (MultiheadAttention), ``bias_ih_l0`` and ``bias_hh_l0`` (RNN, LSTM,
    GRU)."""
    return name == "bias" or name.startswith("bias_") or name.endswith("_bias")


class _Schedule:
    """LR factor of ``LambdaLR`` index ``step`` (optimizer step ``t = step + 1``): a warmup times a decay.

    The warmup is 1 (``"none"``), linear over ``warmup_steps`` steps or exponential at ``rate`` (the factors of
    :mod:`lightning_radam.baselines`). The decay is 1 (``"none"``), cosine or linear from 1 to ``min_lr_ratio`` over
    the ``total - warmup_steps`` steps after the warmup (an exponential warmup has no end: ``warmup_steps`` is then
    the untuned linear warmup's length, ``2 / (1 - beta2)``, where it reaches 1 - e^-2 = 0.86).

    A callable object of plain attributes rather than a closure, so that ``LambdaLR.state_dict`` saves it (its
    ``__dict__``) and ``torch.load(weights_only=True)`` loads it back.
    """

    def __init__(
        self,
        kind: str,
        total: float,
        min_lr_ratio: float,
        warmup: str = "none",
        warmup_steps: float = 0,
        rate: float = 0.0,
    ) -> None:
        self.kind, self.total, self.min_lr_ratio = kind, max(int(total), 1), min_lr_ratio
        self.warmup, self.warmup_steps, self.rate = warmup, warmup_steps, rate

    def warmup_factor(self, step: int) -> float:
        """The warmup's factor alone."""
        if self.warmup == "linear":
            return _linear_factor(step, self.warmup_steps)
        if self.warmup == "exponential":
            return _exponential_factor(step, self.rate)
        return 1.0

    def __call__(self, step: int) -> float:
        progress = min(max(step - self.warmup_steps, 0) / max(self.total - self.warmup_steps, 1), 1.0)
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "linear":
            decay = 1.0 - progress
        else:
            decay = 1.0
        return self.warmup_factor(step) * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay)


class _ScheduleLR(LambdaLR):
    """``LambdaLR`` over :class:`_Schedule` factors, whose decay always spans this fit's steps.

    ``LambdaLR.load_state_dict`` restores each factor's attributes, ``total`` among them: a fit resumed with more steps
    (a larger ``max_steps``) would then run every added step at ``min_lr_ratio * lr``. The position in the schedule is
    restored; the length stays this fit's, and the learning rates are set from it, with a warning when it differs.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        schedules = cast(list[_Schedule], self.lr_lambdas)
        totals = [schedule.total for schedule in schedules]
        super().load_state_dict(state_dict)
        restored = [schedule.total for schedule in schedules]
        if restored == totals:
            return
        for schedule, total in zip(schedules, totals, strict=True):
            schedule.total = total
        lrs = [base_lr * schedule(self.last_epoch) for schedule, base_lr in zip(schedules, self.base_lrs, strict=True)]
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs
        if any(schedule.kind != "none" for schedule in schedules):
            rank_zero_warn(
                f"The checkpoint's lr_schedule decays over {max(restored)} optimizer steps and this fit's over"
                f" {max(totals)} (trainer.estimated_stepping_batches): the learning rate follows this fit's length"
                f" from step {self.last_epoch} on ({', '.join(f'{lr:.3g}' for lr in lrs)})"
            )


class RAdamMixin:
    """Mix into a ``LightningModule`` to train it with :class:`~lightning_radam.RAdam`.

    ``configure_optimizers`` reads these keys from ``self.hparams`` (store them with
    ``self.save_hyperparameters()``), each taking RAdam's default when absent:

    ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (0.0),
    ``decoupled_weight_decay`` (False), ``threshold`` (5.0), ``degenerated_to_sgd`` (False),
    ``foreach`` (None), ``fused`` (None), ``nonfinite_grad`` ("ignore"), ``unscale_in_step`` (False),
    and for the learning rate, per optimizer step (a ``LambdaLR`` with ``"interval": "step"``):

    - ``warmup`` (None): ``None``, ``"none"`` or 0 for none; an int ``N``, linear from 0 to ``lr`` over ``N`` steps
      (step ``t`` at ``lr * t / N``: the first step at ``lr / N``, step ``N`` at ``lr``); ``"untuned_linear"``, the
      same over ``N = 2 / (1 - beta2)`` steps; or ``"untuned_exponential"``, step ``t`` at
      ``lr * (1 - exp(-(1 - beta2) t))``.
      The untuned warmups are Ma & Yarats' (arXiv:1910.04209), with beta2 from ``betas``; the factors are those of
      :mod:`lightning_radam.baselines`. RAdam was designed to need no warmup, yet some runs still train better with
      one: the histograms of :class:`~lightning_radam.callbacks.GradientHistogramMonitor` show an early distortion.
      A warmup longer than the fit (``trainer.estimated_stepping_batches``) warns, naming both lengths.
    - ``lr_schedule`` (``None``/``"none"``, ``"cosine"`` or ``"linear"``): after the warmup, decay from ``lr`` to
      ``min_lr_ratio * lr`` over the remaining ``trainer.estimated_stepping_batches - N`` steps, as Hugging Face's
      ``get_cosine_schedule_with_warmup`` does. The exponential warmup never quite ends: its decay starts after
      ``N = 2 / (1 - beta2)`` steps too (as the untuned linear warmup's, for a like-for-like comparison), and its
      factor multiplies the decay's throughout. A fit resumed from a checkpoint of a fit of another length (a
      larger ``max_steps``, say) keeps its position in the schedule and decays over its own length, with a warning.
    - ``min_lr_ratio`` (0.0): the final fraction of ``lr``.

    Biases (parameters named ``bias``, ``bias_*`` or ``*_bias``, as torch.nn names them: Linear's and Conv's
    ``bias``, MultiheadAttention's ``in_proj_bias``, ``bias_k`` and ``bias_v``, the RNNs' ``bias_ih_l0`` and
    ``bias_hh_l0``) and the parameters of normalisation layers (:data:`NORM_LAYERS`) go into a group without
    weight decay. Each piece can be overridden alone: :meth:`radam_param_groups`,
    :meth:`radam_scheduler`, or :meth:`radam_hparams`.

    Keep hyperparameters to plain values (numbers, strings, lists): a class or a callable stored in
    ``hparams`` makes the checkpoint fail to load under ``torch.load(weights_only=True)``, the
    default since torch 2.6, so this mixin rejects them, under every key and inside lists, tuples and
    dicts (``self.save_hyperparameters(ignore=[...])`` leaves such an argument out).

    Under ``LightningCLI`` with ``--optimizer``, Lightning replaces ``configure_optimizers``; use
    ``--optimizer lightning_radam.RAdam`` (the short name ``RAdam`` resolves to ``torch.optim.RAdam``).

    Raises:
        TypeError: from :meth:`configure_optimizers`, if a hyperparameter is or holds a class or a callable,
            if ``min_lr_ratio`` is not a real number, if ``warmup`` is neither ``None``, an int nor one of the two
            names (``1.5`` and ``True`` are not), or from :class:`~lightning_radam.RAdam` for a hyperparameter
            of the wrong type (``betas`` not a pair of numbers, say).
        ValueError: if ``lr_schedule`` is unknown, ``min_lr_ratio`` is outside [0, 1], ``warmup`` is negative or
            another name (``"cosine"``), or from :class:`~lightning_radam.RAdam` for a hyperparameter out of range.

    Example:
        >>> import lightning as L
        >>> from lightning_radam import RAdamMixin
        >>> class Model(RAdamMixin, L.LightningModule):
        ...     def __init__(self, lr=3e-3, weight_decay=0.01, lr_schedule=None):
        ...         super().__init__()
        ...         self.save_hyperparameters()
        ...         self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
        >>> optimizer = Model().configure_optimizers()
        >>> [len(g["params"]) for g in optimizer.param_groups], [g["weight_decay"] for g in optimizer.param_groups]
        ([2, 4], [0.01, 0.0])
        >>> model = Model()
        >>> model.hparams["warmup"] = 4  # as Model(warmup=4) with a warmup argument
        >>> config = model.configure_optimizers()
        >>> optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
        >>> lrs = []
        >>> for _ in range(5):  # the learning rate of optimizer steps 1 to 5
        ...     lrs.append(round(optimizer.param_groups[0]["lr"], 8))
        ...     optimizer.step()
        ...     scheduler.step()
        >>> lrs
        [0.00075, 0.0015, 0.00225, 0.003, 0.003]
    """

    def radam_hparams(self) -> dict[str, Any]:
        """RAdam's keyword arguments found in ``self.hparams`` (absent keys are left to RAdam's defaults).

        RAdam validates them (a list of betas, as YAML and LightningCLI give, is accepted).

        Raises:
            TypeError: if any hyperparameter, not only RAdam's, is or holds a class or a callable.
        """
        hparams = getattr(self, "hparams", {})
        for key, value in hparams.items():
            _check_plain(value, f"hparams[{key!r}]", key)
        return {key: hparams[key] for key in _OPTIMIZER_KEYS if key in hparams}

    def radam_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups: weight-decayed parameters first, then biases and normalisation parameters.

        The second group has ``weight_decay=0``.

        Only parameters with ``requires_grad`` are included; a group left empty is dropped.

        Raises:
            TypeError: if the class this is mixed into is not a ``torch.nn.Module``.
        """
        if not isinstance(self, nn.Module):
            raise TypeError(f"RAdamMixin must be mixed into a LightningModule, not {type(self).__name__}")
        no_decay: set[int] = set()
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                if isinstance(module, NORM_LAYERS) or _is_bias(name):
                    no_decay.add(id(param))
        params = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in no_decay]},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ]
        return [group for group in groups if group["params"]]

    def radam_scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The Lightning ``lr_scheduler`` config from ``hparams.warmup`` and ``hparams.lr_schedule``.

        ``None`` (a constant rate) when both are absent. Works for any optimizer: an untuned warmup reads beta2
        from each parameter group's ``betas`` (one factor per group), or, for an optimizer without ``betas``,
        from ``hparams.betas`` (RAdam's default when absent).

        Raises:
            ValueError: if ``lr_schedule`` is not one of ``None``, ``"none"``, ``"cosine"``, ``"linear"``,
                ``min_lr_ratio`` is outside [0, 1], ``warmup`` is negative or an unknown name, or a decay is asked
                of a fit with no finite number of steps.
            TypeError: if ``min_lr_ratio`` is not a real number (a str, a bool or ``None`` is not), or ``warmup`` is
                neither ``None``, an int nor a name (a float or a bool is not).
            RuntimeError: from Lightning, if a decay is asked of a module not attached to a ``Trainer``.

        Warns:
            UserWarning: if the warmup is longer than the fit (``trainer.estimated_stepping_batches``), naming both;
                not under ``Trainer(fast_dev_run=...)``, whose few steps are a check that the code runs.
        """
        hparams = getattr(self, "hparams", {})
        kind = hparams.get("lr_schedule")
        min_lr_ratio = check_fraction("min_lr_ratio", hparams.get("min_lr_ratio", 0.0))
        warmup = check_warmup(hparams.get("warmup"))
        kind = check_choice("lr_schedule", kind, _SCHEDULES) or "none"
        if kind == "none" and not warmup:
            return None
        total = self._radam_total_steps(needed=kind != "none")
        if kind != "none" and not math.isfinite(total):
            raise ValueError(
                f"Invalid lr_schedule: {kind!r} needs a finite number of steps (set max_steps or max_epochs)"
            )
        default_betas = hparams.get("betas", inspect.signature(RAdam).parameters["betas"].default)
        schedules: list[Callable[[int], float]] = []
        too_long = {}  # one warning per length (the groups of one optimizer mostly share beta2)
        for group in optimizer.param_groups:
            shape = _warmup(warmup, group.get("betas", default_betas))
            schedules.append(_Schedule(kind, total if math.isfinite(total) else 1, min_lr_ratio, *shape))
            if math.isfinite(total) and shape[1] > total and not self._radam_smoke_run():
                length = f"{warmup}" if isinstance(warmup, int) else f"2 / (1 - beta2) = {shape[1]:g}"
                too_long[length] = schedules[-1](int(total) - 1)
        for length, reached in too_long.items():
            rank_zero_warn(
                f"warmup={warmup!r} spans {length} optimizer steps, more than the {int(total)} of this fit "
                f"(trainer.estimated_stepping_batches): the learning rate reaches only {reached:.3g} of lr"
            )
        return {"scheduler": _ScheduleLR(optimizer, schedules), "interval": "step", "frequency": 1}

    def _radam_smoke_run(self) -> bool:
        """Whether the Trainer is a ``fast_dev_run``: a few batches to check that the code runs, not the fit."""
        return bool(getattr(getattr(self, "_trainer", None), "fast_dev_run", False))

    def _radam_total_steps(self, needed: bool) -> float:
        """``trainer.estimated_stepping_batches``; inf for a module outside a Trainer unless ``needed``."""
        try:
            return self.trainer.estimated_stepping_batches  # type: ignore[attr-defined]
        except RuntimeError:  # not attached to a Trainer: a warmup alone does not need the total
            if needed:
                raise
            return math.inf

    def configure_optimizers(self) -> Any:
        """:class:`~lightning_radam.RAdam` over :meth:`radam_param_groups`, with :meth:`radam_scheduler` if any."""
        optimizer = RAdam(self.radam_param_groups(), **self.radam_hparams())
        scheduler = self.radam_scheduler(optimizer)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
