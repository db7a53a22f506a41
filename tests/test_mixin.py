"""RAdamMixin inside a real Lightning Trainer."""

import lightning as L
import pytest
import torch
from helpers import Model, loader, make_trainer

from lightning_radam import RAdam


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


def test_mixin_pieces_are_overridable_alone(tmp_path):
    class OneGroup(Model):
        def radam_param_groups(self):
            return [{"params": list(self.parameters())}]

    optimizer = OneGroup(net="norms", weight_decay=0.1).configure_optimizers()
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize(
    ("hparams", "error", "message"),
    [
        ({"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
        ({"threshold": 2}, ValueError, "Invalid threshold: 2"),
        ({"lr_schedule": "exp"}, ValueError, "Invalid lr_schedule: 'exp'"),
        ({"lr_schedule": "cosine", "min_lr_ratio": 2.0}, ValueError, "Invalid min_lr_ratio: 2.0"),
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


def test_mixin_checkpoint_resumes_exactly(tmp_path):
    L.seed_everything(0)
    full = Model(net="norms", lr=5e-3, lr_schedule="cosine")
    every_4 = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, filename="{step}"
    )
    make_trainer(tmp_path, logger=False, max_steps=10, callbacks=[every_4], enable_checkpointing=True).fit(
        full, loader(n=128)
    )  # 4 steps an epoch

    resumed = Model(net="norms", lr=5e-3, lr_schedule="cosine")
    t = make_trainer(tmp_path / "resumed", logger=False, max_steps=10)
    t.fit(resumed, loader(n=128), ckpt_path=tmp_path / "step=4.ckpt")  # step 4: inside the unrectified phase
    assert t.global_step == 10
    for a, b in zip(resumed.parameters(), full.parameters(), strict=True):
        assert torch.equal(a, b)
    loaded = torch.load(tmp_path / "step=4.ckpt", weights_only=True)  # plain hparams: loads with torch >= 2.6 defaults
    assert loaded["hyper_parameters"]["lr_schedule"] == "cosine"
