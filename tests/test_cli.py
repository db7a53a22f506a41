"""LightningCLI: `--optimizer lightning_radam.RAdam` and both callbacks configured from a YAML file."""

import glob

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from helpers import read_events
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor


class TinyClassifier(L.LightningModule):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss


class TinyData(L.LightningDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self):
        x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x, x[:, :3].argmax(1)), batch_size=self.batch_size)


CONFIG = """
trainer:
  accelerator: cpu
  max_steps: 8
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_checkpointing: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args:
      save_dir: {root}
      name: cli
  callbacks:
    - class_path: lightning_radam.callbacks.RectificationMonitor
      init_args:
        every_n_steps: 2
    - class_path: lightning_radam.callbacks.GradientHistogramMonitor
      init_args:
        every_n_steps: 4
optimizer:
  class_path: lightning_radam.RAdam
  init_args:
    lr: 0.01
    betas: [0.9, 0.98]
    threshold: 4.0
    decoupled_weight_decay: true
    weight_decay: 0.01
"""


def test_lightning_cli_builds_our_radam_and_callbacks_from_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["cli"])  # the CLI reads args=..., not pytest's own arguments
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    cli = LightningCLI(
        TinyClassifier, TinyData, args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True}
    )
    optimizer = cli.trainer.optimizers[0]
    assert type(optimizer) is RAdam
    group = optimizer.param_groups[0]
    assert (group["lr"], tuple(group["betas"]), group["threshold"], group["decoupled_weight_decay"]) == (
        0.01,
        (0.9, 0.98),
        4.0,
        True,
    )
    kinds = [type(c) for c in cli.trainer.callbacks]
    assert RectificationMonitor in kinds and GradientHistogramMonitor in kinds
    (events,) = glob.glob(str(tmp_path / "cli" / "version_0" / "events.out.tfevents.*"))
    accumulator = read_events(events)
    assert accumulator.Tags()["scalars"] and accumulator.Tags()["histograms"]


def test_lightning_cli_optimizer_flag_overrides_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["cli"])
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(root=tmp_path))
    args = [
        "fit",
        "--config",
        str(config),
        "--optimizer",
        "lightning_radam.RAdam",
        "--optimizer.lr",
        "0.002",
        "--optimizer.degenerated_to_sgd",
        "true",
    ]
    cli = LightningCLI(TinyClassifier, TinyData, args=args, save_config_kwargs={"overwrite": True})
    group = cli.trainer.optimizers[0].param_groups[0]
    assert type(cli.trainer.optimizers[0]) is RAdam and group["lr"] == 0.002 and group["degenerated_to_sgd"] is True
