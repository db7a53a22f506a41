"""Small real models, Trainers and TensorBoard readers shared by the tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing import event_accumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdam, RAdamMixin


@lru_cache(maxsize=1)
def digits() -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))


class DigitsModel(L.LightningModule):
    """A two-layer classifier of sklearn's digits, with its optimizer chosen by the test."""

    def __init__(
        self, make_optimizer: Optional[Callable] = None, batch_size: int = 32, inf_at_step: Optional[int] = None
    ) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 32)
        self.out = torch.nn.Linear(32, 10)
        self.make_optimizer = make_optimizer or (lambda params: RAdam(params, lr=1e-2, betas=(0.9, 0.98)))
        self.batch_size = batch_size
        self.inf_at_step = inf_at_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        if self.trainer.fit_loop.epoch_loop._batches_that_stepped == self.inf_at_step:
            loss = loss * float("inf")  # non-finite gradients: the GradScaler skips this step
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        return DataLoader(digits(), batch_size=self.batch_size, shuffle=True, generator=generator)


def make_trainer(
    tmp_path: Path, callbacks: list, max_steps: int = 6, logger: Any = "tensorboard", **kwargs: Any
) -> L.Trainer:
    if logger == "tensorboard":
        logger = TensorBoardLogger(tmp_path, name="", version=0)
    options = dict(
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1
    )
    options.update(kwargs)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks, **options)


def read_events(log_dir: str) -> event_accumulator.EventAccumulator:
    guidance = {event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0}
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def scalar_series(events: event_accumulator.EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points], dtype=np.float64)


def event_log(path: Path) -> dict[str, dict[str, list]]:
    """Every scalar as (step, value) and every histogram as (step, bucket counts), by tag, for equality checks."""
    events = read_events(str(path))
    tags = events.Tags()
    return {
        "scalars": {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]},
        "histograms": {
            tag: [(e.step, list(e.histogram_value.bucket)) for e in events.Histograms(tag)]
            for tag in tags["histograms"]
        },
    }


class Classifier(RAdamMixin, L.LightningModule):
    """16 features -> 4 classes through Linear, LayerNorm, BatchNorm and a bias-free head; RAdam from hparams."""

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 4, bias=False)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss


def loader(n=256, batch_size=32):
    """A fixed-order loader of a learnable task: the class is the argmax of the first four features."""
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x[:, :4].argmax(1)), batch_size=batch_size, shuffle=False)


def trainer(tmp_path, **kwargs):
    """A CPU Trainer without logger, progress bar, summary or checkpointing unless asked for."""
    defaults = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
