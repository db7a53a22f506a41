"""LightningCLI: `--optimizer lightning_radam.RAdam`, RAdamMixin's hparams and both callbacks from a YAML file."""

import glob
import math

import pytest
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


class MixinModel(Model):
    """``Model(net="norms")`` with RAdamMixin's hparams as typed arguments, as a user's module declares them."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        lr_schedule: str | None = None,
        warmup: int | str | None = None,
    ) -> None:
        super().__init__(net="norms", lr=lr, betas=betas, lr_schedule=lr_schedule, warmup=warmup)


MIXIN_CONFIG = """
trainer:
  default_root_dir: {root}
  accelerator: cpu
  max_steps: 4
  logger: false
  enable_progress_bar: false
  enable_checkpointing: false
model:
  lr: 0.01
  betas: [0.9, 0.8]
{model}
"""


@pytest.mark.filterwarnings("ignore:warmup=")  # the warmups outlast this fit of 4 steps
@pytest.mark.parametrize(  # beta2 = 0.8: 2 / (1 - beta2) = 10 steps; after 4 steps the lr is that of step 5
    ("model", "hparams", "lr"),
    [
        pytest.param("  warmup: untuned_linear", {"warmup": "untuned_linear"}, 0.01 * 5 / 10, id="untuned_linear"),
        pytest.param(
            "  warmup: untuned_exponential",
            {"warmup": "untuned_exponential"},
            0.01 * (1 - math.exp(-0.2 * 5)),
            id="untuned_exponential",
        ),
        pytest.param(
            "  warmup: 8\n  lr_schedule: cosine", {"warmup": 8, "lr_schedule": "cosine"}, 0.01 * 5 / 8, id="8-cosine"
        ),
        pytest.param("  warmup: null", {"warmup": None}, 0.01, id="null"),
    ],
)
def test_lightning_cli_sets_the_mixins_warmup_from_yaml(tmp_path, monkeypatch, model, hparams, lr):
    monkeypatch.setattr("sys.argv", ["cli"])
    config = tmp_path / "config.yaml"
    config.write_text(MIXIN_CONFIG.format(root=tmp_path, model=model))
    cli = LightningCLI(MixinModel, args=["fit", "--config", str(config)], save_config_kwargs={"overwrite": True})
    assert {key: cli.model.hparams[key] for key in hparams} == hparams
    for group in cli.trainer.optimizers[0].param_groups:
        assert group["lr"] == pytest.approx(lr, rel=1e-12)
