"""``RAdamMixin``: a LightningModule gets ``configure_optimizers`` building RAdam from its hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from lightning_radam._checks import check_fraction, shown_repr
from lightning_radam._compat import NORM_BASES
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


class _Schedule:
    """LR factor of step ``t`` out of ``total``: 1 (``none``), cosine or linear decay to ``min_lr_ratio``.

    A callable object rather than a closure, so that ``LambdaLR.state_dict`` can save and restore it.
    """

    def __init__(self, kind: str, total: int, min_lr_ratio: float) -> None:
        self.kind, self.total, self.min_lr_ratio = kind, max(int(total), 1), min_lr_ratio

    def __call__(self, step: int) -> float:
        progress = min(step / self.total, 1.0)
        if self.kind == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "linear":
            decay = 1.0 - progress
        else:
            decay = 1.0
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * decay


class RAdamMixin:
    """Mix into a ``LightningModule`` to train it with :class:`~lightning_radam.RAdam`.

    ``configure_optimizers`` reads these keys from ``self.hparams`` (store them with
    ``self.save_hyperparameters()``), each taking RAdam's default when absent:

    ``lr`` (1e-3), ``betas`` ((0.9, 0.999)), ``eps`` (1e-8), ``weight_decay`` (0.0),
    ``decoupled_weight_decay`` (False), ``threshold`` (5.0), ``degenerated_to_sgd`` (False),
    ``foreach`` (None), ``fused`` (None), ``nonfinite_grad`` ("ignore"), ``unscale_in_step`` (False),
    and for the learning-rate schedule ``lr_schedule``
    (``None``/``"none"``, ``"cosine"`` or ``"linear"``: decay per optimizer step over
    ``trainer.estimated_stepping_batches``; RAdam needs no warmup, but still benefits from annealing)
    and ``min_lr_ratio`` (0.0, the final fraction of ``lr``).

    Biases and the parameters of normalisation layers (:data:`NORM_LAYERS`) go into a group without
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
            if ``min_lr_ratio`` is not a real number, or from :class:`~lightning_radam.RAdam` for a hyperparameter
            of the wrong type (``betas`` not a pair of numbers, say).
        ValueError: if ``lr_schedule`` is unknown or ``min_lr_ratio`` is outside [0, 1], or from
            :class:`~lightning_radam.RAdam` for a hyperparameter out of range.

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
                if isinstance(module, NORM_LAYERS) or name == "bias":
                    no_decay.add(id(param))
        params = [p for p in self.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in no_decay]},
            {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
        ]
        return [group for group in groups if group["params"]]

    def radam_scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The Lightning ``lr_scheduler`` config from ``hparams.lr_schedule``, or ``None`` for a constant rate.

        Raises:
            ValueError: if ``lr_schedule`` is not one of ``None``, ``"none"``, ``"cosine"``, ``"linear"``,
                or ``min_lr_ratio`` is outside [0, 1].
            TypeError: if ``min_lr_ratio`` is not a real number (a str, a bool or ``None`` is not).
        """
        hparams = getattr(self, "hparams", {})
        kind = hparams.get("lr_schedule")
        min_lr_ratio = check_fraction("min_lr_ratio", hparams.get("min_lr_ratio", 0.0))
        if kind not in _SCHEDULES:
            raise ValueError(f"Invalid lr_schedule: {kind!r} (expected one of {_SCHEDULES})")
        if kind in (None, "none"):
            return None
        total = self.trainer.estimated_stepping_batches  # type: ignore[attr-defined]
        if not math.isfinite(total):
            raise ValueError(
                f"Invalid lr_schedule: {kind!r} needs a finite number of steps (set max_steps or max_epochs)"
            )
        return {
            "scheduler": LambdaLR(optimizer, _Schedule(kind, total, min_lr_ratio)),
            "interval": "step",
            "frequency": 1,
        }

    def configure_optimizers(self) -> Any:
        """:class:`~lightning_radam.RAdam` over :meth:`radam_param_groups`, with :meth:`radam_scheduler` if any."""
        optimizer = RAdam(self.radam_param_groups(), **self.radam_hparams())
        scheduler = self.radam_scheduler(optimizer)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
