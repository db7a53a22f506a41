"""Helpers shared by the monitoring callbacks: when to log, where to log, what to call things."""

from __future__ import annotations

import re
from typing import Any, Optional

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger


def _check_every_n_steps(every_n_steps: Any, name: str = "every_n_steps") -> int:
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int):
        raise TypeError(f"Invalid {name}: expected an int, got {every_n_steps!r}")
    if not every_n_steps >= 1:
        raise ValueError(f"Invalid {name}: {every_n_steps} (expected an int >= 1)")
    return every_n_steps


def _compile_pattern(pattern: Any, name: str) -> Optional[re.Pattern]:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"Invalid {name}: expected a regular expression (str) or None, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"Invalid {name}: {pattern!r} is not a regular expression ({error})") from None


def _logged_step(trainer: pl.Trainer) -> int:
    """The step index ``self.log`` uses during a training batch: optimizer steps taken before this batch."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def _optimizer_index(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> int:
    for index, candidate in enumerate(trainer.optimizers):
        if candidate is optimizer or getattr(candidate, "optimizer", None) is optimizer:
            return index
    return 0


def _optimizer_prefix(trainer: pl.Trainer, index: int) -> str:
    """``""`` with one optimizer, ``"optimizer{index}/"`` with several, so tags stay distinct."""
    return "" if len(trainer.optimizers) <= 1 else f"optimizer{index}/"


def _parameter_names(pl_module: pl.LightningModule) -> dict[int, str]:
    return {id(p): name for name, p in pl_module.named_parameters()}


def _tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _log_scalars(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    if metrics:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
