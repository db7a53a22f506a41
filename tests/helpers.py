"""A small classifier with RAdamMixin, its data and a quiet Trainer, shared by the Lightning tests."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdamMixin


class Classifier(RAdamMixin, L.LightningModule):
    """16 features -> 4 classes through Linear, LayerNorm, BatchNorm and a bias-free head; RAdam from hparams."""

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 4, bias=False))

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
    defaults = dict(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    return L.Trainer(**{**defaults, **kwargs})
