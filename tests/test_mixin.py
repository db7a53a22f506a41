"""RAdamMixin inside a real Lightning Trainer."""

import math
import re
import warnings

import lightning as L
import pytest
import torch
from helpers import BETA2S, Model, loader, make_trainer, read_events, scalar_series, two_groups
from lightning.pytorch.callbacks import LearningRateMonitor
from torch import nn

from lightning_radam import RAdam, RAdamMixin


def test_mixin_fits_with_radam_built_from_hparams(tmp_path):
    model = Model(
        net="norms",
        lr=3e-3,
        betas=[0.9, 0.98],
        weight_decay=0.05,
        threshold=4.0,
        decoupled_weight_decay=True,
        nonfinite_grad="skip",
    )
    t = make_trainer(tmp_path, logger=False, max_steps=12)
    t.fit(model, loader())
    optimizer = t.optimizers[0]
    assert type(optimizer) is RAdam
    assert t.global_step == 12
    for group in optimizer.param_groups:
        assert (
            group["lr"],
            group["betas"],
            group["threshold"],
            group["decoupled_weight_decay"],
            group["nonfinite_grad"],
        ) == (3e-3, (0.9, 0.98), 4.0, True, "skip")
    assert optimizer.rectification_stats()[0].step == 12


def test_mixin_excludes_biases_and_norm_parameters_from_weight_decay():
    model = Model(net="norms", weight_decay=0.1)
    decay, no_decay = model.radam_param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["net.0.weight", "net.4.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "net.0.bias",
        "net.1.bias",
        "net.1.weight",
        "net.3.bias",
        "net.3.weight",
    ]
    assert "weight_decay" not in decay
    assert no_decay["weight_decay"] == 0.0


class Recurrent(RAdamMixin, L.LightningModule):
    """Every torch.nn layer whose biases are not named ``bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"weight_decay": 0.1})
        self.attn = nn.MultiheadAttention(8, 2, add_bias_kv=True)
        self.lstm = nn.LSTM(8, 8, bidirectional=True)
        self.gru = nn.GRU(8, 8)
        self.head = nn.Linear(8, 2)


def test_mixin_excludes_the_biases_of_attention_and_recurrent_layers_from_weight_decay():
    model = Recurrent()
    decay, no_decay = model.radam_param_groups()
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "attn.in_proj_weight", "attn.out_proj.weight", "gru.weight_hh_l0", "gru.weight_ih_l0", "head.weight",
        "lstm.weight_hh_l0", "lstm.weight_hh_l0_reverse", "lstm.weight_ih_l0", "lstm.weight_ih_l0_reverse",
    ]  # fmt: skip
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "attn.bias_k", "attn.bias_v", "attn.in_proj_bias", "attn.out_proj.bias", "gru.bias_hh_l0", "gru.bias_ih_l0",
        "head.bias", "lstm.bias_hh_l0", "lstm.bias_hh_l0_reverse", "lstm.bias_ih_l0", "lstm.bias_ih_l0_reverse",
    ]  # fmt: skip


def test_mixin_uses_radam_defaults_when_hparams_are_absent():
    optimizer = Model(net="norms").configure_optimizers()
    reference = RAdam([torch.zeros(1, requires_grad=True)])
    assert {k: v for k, v in optimizer.param_groups[0].items() if k != "params"} == {
        k: v for k, v in reference.param_groups[0].items() if k != "params"
    }


def test_mixin_frozen_parameters_are_left_out():
    model = Model(net="norms")
    model.net[0].requires_grad_(False)
    assert sum(len(g["params"]) for g in model.radam_param_groups()) == 5


@pytest.mark.parametrize(("schedule", "min_lr_ratio"), [("cosine", 0.0), ("linear", 0.1)])
def test_mixin_lr_schedule_anneals_per_step(tmp_path, schedule, min_lr_ratio):
    model = Model(net="norms", lr=1e-2, lr_schedule=schedule, min_lr_ratio=min_lr_ratio)
    t = make_trainer(tmp_path, logger=False, max_steps=8)
    t.fit(model, loader())
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * min_lr_ratio, abs=1e-12)


LR = 1e-2
B2 = {"betas": [0.9, 0.8]}  # beta2 = 0.8: the untuned warmups span 2 / (1 - beta2) = 10 steps
E = math.exp


def cosine(progress):
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# hparams, max_steps, {LearningRateMonitor step s: the lr of optimizer step s + 1, as a fraction of LR}. With a warmup
# of N steps, step t runs at t / N of LR (the first at 1 / N, never 0), then the decay spans the steps after N.
WARMUP_SCHEDULES = [
    pytest.param({"warmup": 4}, 8, {0: 0.25, 1: 0.5, 3: 1.0, 7: 1.0}, id="4-none"),
    pytest.param(
        {"warmup": 4, "lr_schedule": "cosine"}, 12, {0: 0.25, 3: 1.0, 4: 1.0, 8: 0.5, 11: cosine(7 / 8)}, id="4-cosine"
    ),
    pytest.param(
        {"warmup": 4, "lr_schedule": "linear", "min_lr_ratio": 0.1},
        12,
        {0: 0.25, 3: 1.0, 4: 1.0, 8: 0.1 + 0.9 * 0.5, 11: 0.1 + 0.9 / 8},
        id="4-linear-min_lr_ratio",
    ),
    pytest.param({"warmup": "untuned_linear", **B2}, 12, {0: 0.1, 4: 0.5, 9: 1.0, 11: 1.0}, id="untuned_linear-none"),
    pytest.param(
        {"warmup": "untuned_linear", "lr_schedule": "cosine", **B2},
        14,
        {0: 0.1, 9: 1.0, 10: 1.0, 12: 0.5, 13: cosine(3 / 4)},
        id="untuned_linear-cosine",
    ),
    pytest.param(
        {"warmup": "untuned_linear", "lr_schedule": "linear", **B2},
        14,
        {0: 0.1, 9: 1.0, 10: 1.0, 12: 0.5, 13: 0.25},
        id="untuned_linear-linear",
    ),
    pytest.param(
        {"warmup": "untuned_exponential", **B2},
        12,
        {0: 1 - E(-0.2), 4: 1 - E(-1.0), 11: 1 - E(-2.4)},
        id="untuned_exponential-none",
    ),
    pytest.param(  # the decay starts after 2 / (1 - beta2) steps too; the warmup's factor multiplies it
        {"warmup": "untuned_exponential", "lr_schedule": "cosine", **B2},
        14,
        {0: 1 - E(-0.2), 9: 1 - E(-2.0), 10: 1 - E(-2.2), 12: (1 - E(-2.6)) * 0.5, 13: (1 - E(-2.8)) * cosine(3 / 4)},
        id="untuned_exponential-cosine",
    ),
    pytest.param(
        {"warmup": "untuned_exponential", "lr_schedule": "linear", **B2},
        14,
        {0: 1 - E(-0.2), 10: 1 - E(-2.2), 12: (1 - E(-2.6)) * 0.5, 13: (1 - E(-2.8)) * 0.25},
        id="untuned_exponential-linear",
    ),
    pytest.param({"warmup": 0, "lr_schedule": "cosine"}, 12, {0: 1.0, 6: 0.5, 11: cosine(11 / 12)}, id="0-cosine"),
    pytest.param({"warmup": None, "lr_schedule": "linear"}, 8, {0: 1.0, 4: 0.5, 7: 0.125}, id="None-linear"),
    pytest.param({"warmup": "none"}, 4, {0: 1.0, 3: 1.0}, id="none-none"),
]


def logged_lrs(trainer):
    """What LearningRateMonitor wrote, by tag: {step s: the lr of optimizer step s + 1} (it logs before each step)."""
    events = read_events(trainer.logger.log_dir)
    return {
        tag: dict(zip(*scalar_series(events, tag), strict=True))
        for tag in events.Tags()["scalars"]
        if tag.startswith("lr-")
    }


@pytest.mark.parametrize(("hparams", "max_steps", "expected"), WARMUP_SCHEDULES)
def test_mixin_warmup_and_lr_schedule_set_the_lr_of_every_step(tmp_path, hparams, max_steps, expected):
    trainer = make_trainer(tmp_path, [LearningRateMonitor(logging_interval="step")], max_steps=max_steps)
    trainer.fit(Model(net="norms", lr=LR, **hparams))
    lrs = logged_lrs(trainer)
    assert sorted(lrs) == ["lr-RAdam/pg1", "lr-RAdam/pg2"]  # the decayed group and the one without weight decay
    for logged in lrs.values():
        assert list(logged) == list(range(max_steps))
        assert {s: logged[s] for s in expected} == pytest.approx({s: LR * f for s, f in expected.items()}, rel=1e-6)


class OwnOptimizer(Model):
    """A user's own ``configure_optimizers`` (``make_optimizer``'s optimizer) with the mixin's scheduler."""

    def configure_optimizers(self):
        optimizer = self.make_optimizer(self.parameters())
        return {"optimizer": optimizer, "lr_scheduler": self.radam_scheduler(optimizer)}


@pytest.mark.filterwarnings("ignore:warmup=")  # 100 and 2000 warmup steps in a fit of 12
@pytest.mark.parametrize(
    ("make_optimizer", "hparams", "expected"),
    [
        pytest.param(  # beta2 from the optimizer's betas: hparams have none
            lambda p: torch.optim.Adam(p, lr=LR, betas=(0.9, 0.8)),
            {"warmup": "untuned_linear"},
            {"lr-Adam": {0: 0.1, 4: 0.5, 9: 1.0, 11: 1.0}},
            id="Adam-untuned_linear",
        ),
        pytest.param(  # SGD has no betas: beta2 from hparams
            lambda p: torch.optim.SGD(p, lr=LR),
            {"warmup": "untuned_exponential", **B2},
            {"lr-SGD": {0: 1 - E(-0.2), 4: 1 - E(-1.0), 11: 1 - E(-2.4)}},
            id="SGD-untuned_exponential",
        ),
        pytest.param(
            lambda p: torch.optim.SGD(p, lr=LR),
            {"warmup": 4, "lr_schedule": "cosine"},
            {"lr-SGD": {0: 0.25, 3: 1.0, 8: 0.5, 11: cosine(7 / 8)}},
            id="SGD-4-cosine",
        ),
        pytest.param(  # one warmup per parameter group, from the group's own beta2 (BETA2S: 100 and 2000 steps)
            two_groups(lambda groups: torch.optim.AdamW(groups, lr=LR)),
            {"warmup": "untuned_linear"},
            {"lr-AdamW/pg1": {0: 1 / 100, 11: 12 / 100}, "lr-AdamW/pg2": {0: 1 / 2000, 11: 12 / 2000}},
            id="AdamW-two_groups",
        ),
    ],
)
def test_mixin_scheduler_warms_up_any_optimizer(tmp_path, make_optimizer, hparams, expected):
    assert BETA2S == (0.98, 0.999)
    trainer = make_trainer(tmp_path, [LearningRateMonitor(logging_interval="step")], max_steps=12)
    trainer.fit(OwnOptimizer(make_optimizer, net="norms", **hparams))
    lrs = logged_lrs(trainer)
    assert sorted(lrs) == sorted(expected)
    for tag, fractions in expected.items():
        assert {s: lrs[tag][s] for s in fractions} == pytest.approx({s: LR * f for s, f in fractions.items()}, rel=1e-6)


OF_8 = r"optimizer steps, more than the 8 of this fit \(trainer.estimated_stepping_batches\): the learning rate"
UNTUNED = r"spans 2 / \(1 - beta2\) = 2000"  # the default beta2, 0.999


@pytest.mark.parametrize(
    ("warmup", "message"),
    [
        (20, rf"warmup=20 spans 20 {OF_8} reaches only 0.4 of lr"),
        ("untuned_linear", rf"warmup='untuned_linear' {UNTUNED} {OF_8} reaches only 0.004 of lr"),
        ("untuned_exponential", rf"warmup='untuned_exponential' {UNTUNED} {OF_8} reaches only 0.00797 of lr"),
        (8, None),  # reaches lr at the last step: no warning
    ],
)
def test_mixin_warns_once_when_the_warmup_outlasts_the_fit(tmp_path, warmup, message):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, logger=False, max_steps=8).fit(Model(net="norms", warmup=warmup))  # default beta2 0.999
    ours = [str(w.message) for w in caught if "warmup=" in str(w.message)]
    assert len(ours) == (message is not None)  # once, although both parameter groups have this warmup
    if message is not None:
        assert re.fullmatch(message, ours[0])


@pytest.mark.parametrize("fast_dev_run", [True, 3])
def test_mixin_does_not_warn_about_the_warmup_in_a_fast_dev_run(tmp_path, fast_dev_run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(tmp_path, logger=False, fast_dev_run=fast_dev_run).fit(Model(net="norms", warmup="untuned_linear"))
    assert not [w for w in caught if "warmup=" in str(w.message)]


def test_mixin_pieces_are_overridable_alone(tmp_path):
    class OneGroup(Model):
        def radam_param_groups(self):
            return [{"params": list(self.parameters())}]

    optimizer = OneGroup(net="norms", weight_decay=0.1).configure_optimizers()
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.1


WARMUP_KINDS = "None, an int number of steps, 'untuned_linear' or 'untuned_exponential'"


@pytest.mark.parametrize(
    ("hparams", "error", "message"),
    [
        ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
        ({"threshold": 2}, ValueError, "Invalid threshold: 2"),
        ({"lr_schedule": "exp"}, ValueError, "Invalid lr_schedule: 'exp'"),
        ({"lr_schedule": "cosine", "min_lr_ratio": 2.0}, ValueError, "Invalid min_lr_ratio: 2.0"),
        ({"warmup": -1}, ValueError, r"^Invalid warmup: -1 \(expected warmup >= 0\)$"),
        ({"warmup": 1.5}, TypeError, f"^Invalid warmup: expected {WARMUP_KINDS}, got 1.5$"),
        ({"warmup": True}, TypeError, f"^Invalid warmup: expected {WARMUP_KINDS}, got True$"),
        ({"warmup": "cosine"}, ValueError, rf"^Invalid warmup: 'cosine' \(expected {WARMUP_KINDS}\)$"),
        ({"warmup": [100]}, TypeError, r"^Invalid warmup: expected .*, got \[100\]$"),
        ({"warmup": "untuned_linear", "lr_schedule": "exp"}, ValueError, "Invalid lr_schedule: 'exp'"),
    ],
)
def test_mixin_rejects_invalid_hparams(hparams, error, message):
    with pytest.raises(error, match=message):
        Model(net="norms", **hparams).configure_optimizers()


def test_mixin_rejects_callables_in_hparams():
    model = Model(net="norms")
    model.hparams["lr"] = lambda: 1e-3  # what save_hyperparameters would have stored
    with pytest.raises(TypeError, match=r"Invalid hparams\['lr'\]"):
        model.configure_optimizers()


@pytest.mark.parametrize(  # beta2 = 0.75: the untuned warmups span 2 / (1 - beta2) = 8 steps
    "hparams",
    [
        pytest.param({"lr_schedule": "cosine"}, id="cosine"),
        pytest.param({"lr_schedule": "cosine", "warmup": 6}, id="mid_warmup-6-cosine"),
        pytest.param(
            {"lr_schedule": "linear", "warmup": "untuned_linear", "betas": [0.9, 0.75]}, id="mid_warmup-8-linear"
        ),
        pytest.param({"warmup": "untuned_exponential", "betas": [0.9, 0.75]}, id="mid_warmup-exponential"),
    ],
)
def test_mixin_checkpoint_resumes_exactly(tmp_path, hparams):
    L.seed_everything(0)
    full = Model(net="norms", lr=5e-3, **hparams)
    every_4 = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}"
    )
    callbacks = [every_4, LearningRateMonitor(logging_interval="step")]
    t = make_trainer(tmp_path / "full", callbacks, max_steps=10, enable_checkpointing=True)
    t.fit(full, loader(n=128))  # 4 steps an epoch
    full_lrs, full_lr = logged_lrs(t), [group["lr"] for group in t.optimizers[0].param_groups]

    resumed = Model(net="norms", lr=5e-3, **hparams)
    t = make_trainer(tmp_path / "resumed", [LearningRateMonitor(logging_interval="step")], max_steps=10)
    t.fit(resumed, loader(n=128), ckpt_path=tmp_path / "step=4.ckpt")  # step 4: inside the unrectified phase
    assert t.global_step == 10
    for a, b in zip(resumed.parameters(), full.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [group["lr"] for group in t.optimizers[0].param_groups] == full_lr  # float64, exactly
    resumed_lrs = logged_lrs(t)
    assert resumed_lrs == {tag: {s: lr for s, lr in lrs.items() if s >= 4} for tag, lrs in full_lrs.items()}
    if "warmup" in hparams:  # the checkpoint was taken mid-warmup
        assert resumed_lrs["lr-RAdam/pg1"][4] < 5e-3
    loaded = torch.load(tmp_path / "step=4.ckpt", weights_only=True)  # plain hparams: loads with torch >= 2.6 defaults
    assert loaded["hyper_parameters"] == hparams | {"lr": 5e-3}


@pytest.mark.parametrize("hparams", [{"lr_schedule": "cosine"}, {"lr_schedule": "linear", "warmup": 2}])
def test_mixin_fit_resumed_with_more_steps_decays_over_its_own_length(tmp_path, hparams):
    """The checkpoint's position in the schedule, this fit's length: the added steps do not all run at min_lr."""
    lr_monitor = LearningRateMonitor(logging_interval="step")
    longer = make_trainer(tmp_path / "longer", [lr_monitor], max_steps=16)
    longer.fit(Model(net="norms", lr=LR, **hparams), loader(n=128))
    short = make_trainer(tmp_path / "short", logger=False, max_steps=8)
    short.fit(Model(net="norms", lr=LR, **hparams), loader(n=128))
    short.save_checkpoint(tmp_path / "short.ckpt")
    resumed = make_trainer(tmp_path / "resumed", [LearningRateMonitor(logging_interval="step")], max_steps=16)
    with pytest.warns(UserWarning, match=r"decays over 8 optimizer steps and this fit's over 16"):
        resumed.fit(Model(net="norms", lr=LR, **hparams), loader(n=128), ckpt_path=tmp_path / "short.ckpt")
    expected = {tag: {s: lr for s, lr in lrs.items() if s >= 8} for tag, lrs in logged_lrs(longer).items()}
    assert logged_lrs(resumed) == expected  # the same float64 rates, written as float32
    assert min(expected["lr-RAdam/pg1"].values()) > 0.0


def test_mixin_fit_resumed_with_as_many_steps_does_not_warn(tmp_path):
    short = make_trainer(tmp_path / "short", logger=False, max_steps=8)
    short.fit(Model(net="norms", lr=LR, lr_schedule="cosine"), loader(n=128))
    short.save_checkpoint(tmp_path / "short.ckpt")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The checkpoint's lr_schedule")
        make_trainer(tmp_path / "again", logger=False, max_steps=8).fit(
            Model(net="norms", lr=LR, lr_schedule="cosine"), loader(n=128), ckpt_path=tmp_path / "short.ckpt"
        )
