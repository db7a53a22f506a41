"""Reliability at scale: DDP, mixed precision, accumulation, clipping, exact resume, mixed dtypes."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import PATHS, Model, assert_same, backward, event_log, loader, make_trainer, relative_error, snapshot
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

HERE = Path(__file__).resolve().parent


def run_script(*args, cwd):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_ddp_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    run_script("--devices", 2, "--out", tmp_path / "two", cwd=tmp_path)
    run_script("--devices", 1, "--out", tmp_path / "one", cwd=tmp_path)
    two, one = torch.load(tmp_path / "two" / "result.pt"), torch.load(tmp_path / "one" / "result.pt")
    rank1 = torch.load(tmp_path / "two" / "rank1.pt")
    for p2, p1, q in zip(two["params"], one["params"], rank1["params"], strict=True):
        assert torch.equal(p2, q)  # ranks stay in sync
        assert relative_error([p2], [p1]) < 1e-12  # float64: all-reduce order is the only difference
    steps = {s["step"].item() for s in two["optimizer"]["state"].values()}
    assert steps == {12.0}
    (two_events,) = (tmp_path / "two" / "tb").rglob("events.out.tfevents.*")  # only rank zero writes
    (one_events,) = (tmp_path / "one" / "tb").rglob("events.out.tfevents.*")
    two_log, one_log = event_log(two_events), event_log(one_events)
    assert two_log["scalars"].keys() == one_log["scalars"].keys()
    assert two_log["histograms"].keys() == one_log["histograms"].keys()
    assert [s for s, _ in two_log["scalars"]["radam/group0/rho_t"]] == list(range(12))  # once per step, no duplicates
    for tag, points in one_log["scalars"].items():
        if tag.startswith("radam/") and "layer" not in tag:  # rho_t, r_t, variances: once per step, equal
            assert [s for s, _ in two_log["scalars"][tag]] == [s for s, _ in points], tag
            assert [v for _, v in two_log["scalars"][tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    assert one_log["histograms"]
    for tag, histograms in one_log["histograms"].items():  # the histograms of the all-reduced gradients
        assert two_log["histograms"][tag] == histograms, tag


@pytest.mark.parametrize(("accumulate", "clip"), [(1, None), (4, None), (3, 0.5), (2, 1e-3)])
def test_rho_t_advances_once_per_optimizer_step(tmp_path, accumulate, clip):
    model = Model(net="norms", lr=1e-2)
    t = make_trainer(tmp_path, max_steps=7, logger=False, accumulate_grad_batches=accumulate, gradient_clip_val=clip)
    t.fit(model, loader())
    optimizer = t.optimizers[0]
    assert {s["step"].item() for s in optimizer.state.values()} == {7.0}
    stats = optimizer.rectification_stats()[0]
    assert stats.step == 7
    assert stats.rectified


def full_loss(model):
    x, y = loader().dataset.tensors
    with torch.no_grad():
        return nn.functional.cross_entropy(model.net(x), y).item()


def test_bf16_mixed_on_cpu_trains_like_fp32(tmp_path):
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(0)
        model = Model(net="norms", lr=3e-2)
        initial = full_loss(model)
        make_trainer(tmp_path, max_steps=60, logger=False, precision=precision).fit(model, loader())
        assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())
        losses[precision] = full_loss(model)
    assert losses["bf16-mixed"] < initial - 0.3
    assert abs(losses["bf16-mixed"] - losses["32-true"]) < 0.1


def test_grad_scaler_skipped_step_leaves_radam_untouched():
    model = Model(seed=0)
    optimizer = RAdam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    for step in range(8):
        backward(model, seed=step, scaler=scaler)
        if step == 6:  # one overflowing step, inside the rectified phase
            model.out.weight.grad[0, 0] = float("inf")
            before = snapshot(model.parameters(), optimizer)
        scaler.step(optimizer)
        scaler.update()
        if step == 6:
            assert_same(snapshot(model.parameters(), optimizer), before)
    assert optimizer.state[model.out.weight]["step"].item() == 7  # eight calls, one skipped


@pytest.mark.parametrize("path", PATHS)
def test_mixed_dtypes_in_one_group_each_step_in_their_own_precision(path):
    params = [
        torch.ones(3, dtype=dtype, requires_grad=True)
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    ]
    optimizer = RAdam(params, lr=0.1, **path)
    for _ in range(8):
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
    reference_update = 1.0 - params[1].detach()  # float64
    assert (reference_update > 0.005).all()
    for p in params:
        assert optimizer.state[p]["exp_avg"].dtype == p.dtype
        update = 1.0 - p.detach().double()
        assert (update > 0).all(), p.dtype  # every dtype moved
        # the same steps, to each dtype's precision (bfloat16 spaces values near 1 by 2^-7)
        assert torch.allclose(update, reference_update, rtol=0.05, atol=2 * torch.finfo(p.dtype).eps), p.dtype


class ResumableLoader:
    """Batches in a fixed order, with the state_dict/load_state_dict Lightning uses to resume mid-epoch."""

    def __init__(self, n=128, batch_size=16):
        self.batches = list(loader(n, batch_size))
        self.position = 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        start, self.position = self.position, 0
        for index in range(start, len(self.batches)):
            self.position = index + 1
            yield self.batches[index]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def monitors():
    return [RectificationMonitor(layers="weight"), GradientHistogramMonitor(layers="weight")]


def test_checkpoint_resume_is_bitwise_inside_and_after_the_unrectified_phase(tmp_path):
    L.seed_everything(0)
    full = Model(net="norms", lr=1e-2, lr_schedule="linear")
    every = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1, filename="{step}"
    )
    logger = TensorBoardLogger(tmp_path, name="full", version=0)
    trainer = make_trainer(tmp_path, [every, *monitors()], max_steps=16, logger=logger, enable_checkpointing=True)
    trainer.fit(full, ResumableLoader())
    (full_events,) = (tmp_path / "full").rglob("events.out.tfevents.*")
    full_log = event_log(full_events)
    for resume_step in (3, 11):  # inside the unrectified phase (steps 1-5 skip), and after it, both mid-epoch
        resumed = Model(net="norms", lr=1e-2, lr_schedule="linear")
        logger = TensorBoardLogger(tmp_path, name=f"resume{resume_step}", version=0)
        t = make_trainer(tmp_path, monitors(), max_steps=16, logger=logger)
        t.fit(resumed, ResumableLoader(), ckpt_path=tmp_path / f"step={resume_step}.ckpt")
        assert t.global_step == 16
        assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), full.parameters(), strict=True)), resume_step
        (events,) = (tmp_path / f"resume{resume_step}").rglob("events.out.tfevents.*")
        resumed_log = event_log(events)
        for kind in ("scalars", "histograms"):  # the resumed run logs exactly the remaining steps, bitwise equal
            assert resumed_log[kind].keys() == full_log[kind].keys()
            for tag, points in full_log[kind].items():
                if tag.startswith(("radam/", "grad")):
                    assert resumed_log[kind][tag] == [point for point in points if point[0] >= resume_step], tag
