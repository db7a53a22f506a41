"""Sharded training (FSDP2 through Lightning's ModelParallelStrategy, 2 CPU ranks, gloo) logs and steps as DDP does.

The test runs this file as a script on 2 ranks (Lightning's launcher starts the second), inside a timeout, so a
collective that one rank enters alone fails the test instead of blocking it. The script fits the same float64 model
on the same global batches once per layout of ``LAYOUTS``, with both monitors (``layers=".*"``) and
``RAdam(nonfinite_grad="skip")``; at step ``INF_STEP`` the last element of ``hidden.weight``'s gradient is set to inf
on the ranks whose shard holds it (rank 1 alone under FSDP2), so the step must be skipped on every rank.
"""

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers import event_log, read_events, relative_error
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

RANKS = 2
STEPS = 10
INF_STEP = 7  # a rectified step (threshold 5 rectifies from t = 6, i.e. step index 5)
GLOBAL_BATCH = 16
TIMEOUT_S = 180  # the whole script, every layout (about 20 s); a hang is killed here
#: how each run shards the model: "ddp" (the reference: every rank holds every gradient, all-reduced), "fsdp"
#: (fully_shard over the 2 ranks: every gradient Shard(0), rank 1's shard of a 1-row weight is empty) and "hsdp"
#: (fully_shard over a 2-D mesh, replicated across the 2 ranks and sharded over 1: placements (Replicate(),
#: Shard(0)), where a sum over every rank would count each element twice)
LAYOUTS = ("ddp", "fsdp", "hsdp")


class Net(L.LightningModule):
    def __init__(self, layout: str) -> None:
        super().__init__()
        self.layout = layout
        # 16 rows (8 per rank), 3 rows (uneven: 2 and 1), 1 row (rank 1's shard empty)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3), nn.Tanh(), nn.Linear(3, 1))

    def configure_model(self) -> None:
        if self.layout == "ddp":
            return
        mesh = self.device_mesh if self.layout == "hsdp" else self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_after_backward(self) -> None:  # gradients are reduced (all-reduce, reduce-scatter) when backward returns
        if self.trainer.global_step == INF_STEP:
            grad = self.net[0].weight.grad
            if isinstance(grad, DTensor):  # only the ranks whose shard holds the last row: rank 1 under FSDP2
                mesh, local = grad.device_mesh, grad.to_local()
                shard_dims = [d for d, placement in enumerate(grad.placements) if placement.is_shard()]
                if all(mesh.get_local_rank(d) == mesh.size(d) - 1 for d in shard_dims) and local.numel():
                    local.view(-1)[-1] = float("inf")
            else:
                grad.view(-1)[-1] = float("inf")

    def configure_optimizers(self):
        return RAdam(self.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01, nonfinite_grad="skip")


def data(rank: int) -> DataLoader:
    """This rank's contiguous half of every global batch (no shuffling): every layout sees the same global batches."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH * STEPS, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    local = GLOBAL_BATCH // RANKS
    shard = torch.arange(len(x)).view(STEPS, RANKS, local)[:, rank].flatten()
    return DataLoader(TensorDataset(x[shard], y[shard]), batch_size=local, shuffle=False)


def fit(out: Path, layout: str) -> None:
    L.seed_everything(0, verbose=False)
    model = Net(layout)
    if layout == "ddp":
        strategy = DDPStrategy(process_group_backend="gloo")
    else:
        strategy = ModelParallelStrategy(data_parallel_size=RANKS, tensor_parallel_size=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=RANKS, strategy=strategy, max_steps=STEPS,
        logger=TensorBoardLogger(out, name=layout, version=0), log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=False,
        callbacks=[RectificationMonitor(layers=".*"), GradientHistogramMonitor(layers=".*")],
    )  # fmt: skip
    trainer.fit(model, data(int(os.environ.get("LOCAL_RANK", 0))))
    optimizer = trainer.optimizers[0]
    params = {  # the whole parameter on every rank (full_tensor is a collective: every rank calls it, in order)
        name: (p.full_tensor() if isinstance(p, DTensor) else p).detach().clone()
        for name, p in model.named_parameters()
    }
    steps = [optimizer.state[p]["step"].item() for p in model.parameters()]
    placements = {
        name: [str(placement) for placement in p.placements] if isinstance(p, DTensor) else []
        for name, p in model.named_parameters()
    }
    torch.save(
        {"params": params, "steps": steps, "placements": placements}, out / layout / f"rank{trainer.global_rank}.pt"
    )


def run_script(out: Path) -> None:
    """Fit every layout on 2 ranks; kill every rank if it takes longer than TIMEOUT_S."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--out", str(out)],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Lightning's launcher starts rank 1 in this session: killpg ends both
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(
            f"the 2-rank fits did not finish in {TIMEOUT_S} s (a collective entered by one rank?):\n{output[-3000:]}"
        )
    assert process.returncode == 0, output[-3000:]


def events_file(runs: Path, layout: str) -> Path:
    (path,) = (runs / layout).rglob("events.out.tfevents.*")  # one file: only rank zero writes
    return path


def histograms(path: Path) -> dict[str, list[tuple[int, dict[float, float]]]]:
    """Every histogram of an event file, as (step, {bucket upper limit: count}) by tag."""
    events = read_events(path)
    return {
        tag: [
            (h.step, dict(zip(h.histogram_value.bucket_limit, h.histogram_value.bucket, strict=True))) for h in series
        ]
        for tag in events.Tags()["histograms"]
        for series in [events.Histograms(tag)]
    }


def total_variation(a: dict, b: dict) -> float:
    """Elements counted in different buckets by two histograms of as many elements: half the L1 distance."""
    return sum(abs(a.get(limit, 0.0) - b.get(limit, 0.0)) for limit in a.keys() | b.keys()) / 2.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    run_script(out)
    return out


SHARDED = [
    pytest.param("fsdp", ["S(0)"], id="fsdp"),
    pytest.param("hsdp", ["R", "S(0)"], id="hsdp"),
]


@pytest.mark.parametrize(("layout", "placements"), SHARDED)
def test_sharded_fit_skips_the_inf_step_on_every_rank_and_matches_ddp(runs, layout, placements):
    reference = torch.load(runs / "ddp" / "rank0.pt")
    ranks = [torch.load(runs / layout / f"rank{rank}.pt") for rank in range(RANKS)]
    for result in ranks:  # the layout is the one named (gradients are placed as their parameters)
        assert all(value == placements for value in result["placements"].values())
    for result in [reference, *ranks]:
        assert set(result["steps"]) == {STEPS - 1}  # every parameter on every rank: the inf step was skipped
    for result in ranks:
        assert result["params"].keys() == reference["params"].keys()
        for name, expected in reference["params"].items():
            assert relative_error([result["params"][name]], [expected]) < 1e-12, name  # float64, reduction order


@pytest.mark.parametrize(("layout", "placements"), SHARDED)
def test_sharded_monitors_log_what_ddp_logs(runs, layout, placements):
    reference, logged = event_log(events_file(runs, "ddp")), event_log(events_file(runs, layout))
    assert logged["scalars"].keys() == reference["scalars"].keys()
    names = [f"net.{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")]
    assert {"grad/log10_abs", *(f"grad/layer/{name}/log10_abs" for name in names)} <= reference["histograms"].keys()
    assert {f"radam/layer/{name}/adaptive_lr_log10_std" for name in names} <= reference["scalars"].keys()
    for tag, points in reference["scalars"].items():
        assert [step for step, _ in logged["scalars"][tag]] == [step for step, _ in points], tag
        values = [value for _, value in logged["scalars"][tag]]
        assert values == pytest.approx([value for _, value in points], rel=1e-6, abs=1e-12), tag  # float32 events
    every_step = range(STEPS)
    assert dict(logged["scalars"]["grad/nonfinite"]) == {step: float(step == INF_STEP) for step in every_step}
    assert dict(logged["scalars"]["radam/group0/skipped"]) == {step: float(step == INF_STEP) for step in every_step}
    reference_histograms, logged_histograms = (
        histograms(events_file(runs, "ddp")),
        histograms(events_file(runs, layout)),
    )
    assert logged_histograms.keys() == reference_histograms.keys()
    for tag, series in reference_histograms.items():
        assert [step for step, _ in logged_histograms[tag]] == [step for step, _ in series], tag
        for (step, counts), (_, expected) in zip(logged_histograms[tag], series, strict=True):
            assert sum(counts.values()) == sum(expected.values()), (tag, step)  # every element once, never twice
            # equal, up to elements that the order of the gradient reduction moves across a bucket edge
            assert total_variation(counts, expected) <= 2, (tag, step)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    for each in LAYOUTS:
        fit(options.out, each)
