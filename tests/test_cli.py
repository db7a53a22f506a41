"""LightningCLI: `--optimizer lightning_radam.RAdam` and both callbacks configured from a YAML file."""

import glob

from helpers import Model, read_events
from lightning.pytorch.cli import LightningCLI

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

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
    cli = LightningCLI(Model, args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True})
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
    assert RectificationMonitor in kinds
    assert GradientHistogramMonitor in kinds
    (events,) = glob.glob(str(tmp_path / "cli" / "version_0" / "events.out.tfevents.*"))
    accumulator = read_events(events)
    assert accumulator.Tags()["scalars"]
    assert accumulator.Tags()["histograms"]


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
    cli = LightningCLI(Model, args=args, save_config_kwargs={"overwrite": True})
    group = cli.trainer.optimizers[0].param_groups[0]
    assert type(cli.trainer.optimizers[0]) is RAdam
    assert group["lr"] == 0.002
    assert group["degenerated_to_sgd"] is True
