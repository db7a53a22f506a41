"""Quick start: train a small CNN on scikit-learn's handwritten digits with RAdam, logging to TensorBoard.

A LightningModule gets RAdam by mixing in ``RAdamMixin``: ``configure_optimizers`` is built from the
hyperparameters saved with ``save_hyperparameters()`` (lr, betas, weight_decay, lr_schedule, ...).
The two monitors put rho_t, r_t, the variance of the adaptive learning rate and per-step
histograms of log10|gradient| into TensorBoard (SCALARS, CUSTOM SCALARS and HISTOGRAMS tabs).
The digits (1,797 8x8 images) ship with scikit-learn, so nothing is downloaded. About a minute on
two CPU cores with the defaults.

Example:
    python examples/quickstart.py
    python examples/quickstart.py --max-epochs 5 --log-dir runs
    python -m tensorboard.main --logdir runs
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdamMixin
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor


class DigitsCNN(RAdamMixin, L.LightningModule):
    """A small convolutional classifier of 8x8 digits, trained with RAdam through the mixin."""

    def __init__(
        self,
        lr: float = 3e-3,
        betas: tuple = (0.9, 0.999),
        weight_decay: float = 1e-4,
        lr_schedule: str = "cosine",
        width: int = 32,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, 10),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", nn.functional.cross_entropy(logits, y))
        self.log("val/accuracy", (logits.argmax(1) == y).float().mean(), prog_bar=True)


def digits_loaders(batch_size: int, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders over scikit-learn's digits (80/20 split, pixels scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    split = int(0.8 * len(y))
    train, val = order[:split], order[split:]
    return (
        DataLoader(
            TensorDataset(x[train], y[train]),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        ),
        DataLoader(TensorDataset(x[val], y[val]), batch_size=256),
    )


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--log-dir", default="runs", help="TensorBoard log directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.max_epochs < 1:
        parser.error(f"--max-epochs must be >= 1, got {args.max_epochs}")

    L.seed_everything(args.seed, verbose=False)
    train, val = digits_loaders(args.batch_size, args.seed)
    model = DigitsCNN(lr=args.lr)
    logger = TensorBoardLogger(args.log_dir, name="quickstart")
    # rho_t, r_t and the variance of the adaptive learning rate per step; histograms of log10|g|, global and per weight
    monitors = [
        RectificationMonitor(layers=r"weight$"),
        GradientHistogramMonitor(layers=r"weight$", layer_every_n_steps=10),
    ]
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=monitors,
        log_every_n_steps=10,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),  # in a log file or CI, a bar is thousands of lines
    )
    trainer.fit(model, train, val)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"validation accuracy {metrics['val/accuracy']:.4f} after {trainer.global_step} RAdam steps")
    # This interpreter's own TensorBoard: a bare `tensorboard` is not on PATH when the package lives in a venv
    command = f"{shlex.quote(sys.executable)} -m tensorboard.main --logdir {shlex.quote(args.log_dir)}"
    print(f"TensorBoard logs written to {logger.log_dir}; view them with:\n    {command}")
    return metrics


if __name__ == "__main__":
    main()
