"""Sharded training (FSDP2, gloo on CPU ranks): the monitors and RAdam's nonfinite_grad give what DDP gives.

The tests run this file as a script, inside a timeout, so that a collective that one rank enters alone fails the
test instead of blocking it:

- ``--out DIR``: 2 ranks (Lightning's launcher starts the second) fit the same float64 model on the same global
  batches once per layout of ``LAYOUTS`` (DDP, the reference, then FSDP2 through Lightning's
  ``ModelParallelStrategy``), with both monitors (``layers=".*"``) and ``RAdam(nonfinite_grad="skip")``; at step
  ``INF_STEP`` the last element of ``net.0.weight``'s gradient is set to inf on the ranks whose shard holds it
  (rank 1 alone under FSDP2), so the step must be skipped on every rank.
- ``--tensor-parallel DIR``: 4 ranks (a 2 x 2 mesh) shard a tensor-parallel model with FSDP2, whose gradients are
  placed ``(_StridedShard, Shard)``, ``(Shard, Shard)`` and ``(Shard, Replicate)``; the sums across shards the monitors
  use are compared with the whole gradients (``full_tensor()``), and an inf in one rank's shard is skipped by all.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import event_log, read_events, relative_error
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Partial, Replicate
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdam
from lightning_radam._distributed import sum_across_shards
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor, log2_bucket_counts
from lightning_radam.callbacks._distributed import mean_and_std_across_shards, std_mean, sum_histograms_across_shards

RANKS = 2
STEPS = 10
INF_STEP = 7  # a rectified step (threshold 5 rectifies from t = 6, i.e. step index 5)
GLOBAL_BATCH = 16
TIMEOUT_S = 180  # one run of this script (20-50 s on 2 shared cores); a hang is killed here
TP_RANKS = 4
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


def fit(out: Path, layout: str, rank: int) -> None:
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
        callbacks=[RectificationMonitor(layers=".*"), GradientHistogramMonitor(layers=".*", on_distortion="stop")],
    )  # fmt: skip
    trainer.fit(model, data(rank))
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
    torch.save({"params": params, "steps": steps, "placements": placements}, out / layout / f"rank{rank}.pt")


def fit_layouts(rank: int, out: Path, port: int) -> None:
    """One of RANKS ranks, started as torchrun would (Lightning then starts no process itself): every layout."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(RANKS), LOCAL_RANK=str(rank))
    for layout in LAYOUTS:
        fit(out, layout, rank)


def tensor_parallel(rank: int, out: Path, port: int) -> None:
    """One of TP_RANKS ranks: FSDP2 over tensor parallelism, the monitors' sums against the whole gradients."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=TP_RANKS)
    torch.manual_seed(0)
    mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    parallelize_module(model, mesh["tp"], {"0": ColwiseParallel(), "2": RowwiseParallel()})
    fully_shard(model, mesh=mesh["dp"])
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(mesh.get_local_rank("dp")))  # a batch per dp rank
    model(x).pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    shards = [grad.to_local() for grad in grads]
    counts = [log2_bucket_counts(shard) for shard in shards]
    histograms, _, numels = sum_histograms_across_shards(
        counts, [torch.count_nonzero(shard) for shard in shards], grads, list(range(len(grads)))
    )
    moments = mean_and_std_across_shards([std_mean(shard) for shard in shards], [s.numel() for s in shards], grads)
    whole = [grad.full_tensor() for grad in grads]  # every rank, in order: a collective
    unreduced = DTensor.from_local(torch.ones(2), mesh, [Partial(), Replicate()])
    try:
        sum_across_shards([torch.ones(1)], [unreduced])
        partial_error = ""
    except ValueError as error:
        partial_error = str(error)
    optimizer = RAdam(model.parameters(), lr=1e-2, nonfinite_grad="skip")
    if rank == TP_RANKS - 1:
        shards[0].view(-1)[0] = float("inf")  # one rank's shard of the first weight's gradient
    optimizer.step()
    result = {
        "placements": [str(grad.placements) for grad in grads],
        "histograms": [h.tolist() for h in histograms],
        "numels": numels,
        "moments": moments,
        "whole": whole,
        "stepped": [p in optimizer.state for p in model.parameters()],
        "partial_error": partial_error,
    }
    torch.save(result, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(*args: object) -> None:
    """Run this file as a script with ``args``; kill every rank if it takes longer than TIMEOUT_S."""
    process = subprocess.Popen(
        [sys.executable, __file__, *map(str, args)],
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the other ranks start in this session: killpg ends them all
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the ranks did not finish in {TIMEOUT_S} s (a collective entered by one rank?):\n{output[-3000:]}")
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
    run_script("--out", out)
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


def test_fsdp_over_tensor_parallel_sums_each_element_once_and_skips_on_every_rank(tmp_path):
    run_script("--tensor-parallel", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(TP_RANKS)]
    placements = ranks[0]["placements"]  # the layouts the test is about
    assert "(_StridedShard(dim=0, sf=2), Shard(dim=0))" in placements
    assert {"(Shard(dim=0), Shard(dim=1))", "(Shard(dim=0), Replicate())"} <= set(placements)
    for result in ranks:
        whole = result["whole"]
        expected = [log2_bucket_counts(grad) for grad in whole]
        assert result["histograms"] == [torch.stack(expected).sum(0).tolist()] + [e.tolist() for e in expected]
        assert result["numels"] == [sum(grad.numel() for grad in whole)] + [grad.numel() for grad in whole]
        for (mean, std), grad in zip(result["moments"], whole, strict=True):
            assert mean == pytest.approx(grad.mean().item(), rel=1e-6, abs=1e-9)
            assert std == pytest.approx(grad.std(correction=0).item(), rel=1e-5)
        assert result["stepped"] == [False] * len(whole)  # the inf on one rank's shard: no rank stepped
        assert (
            "Cannot sum across the shards of a DTensor with placements (Partial(sum), Replicate())"
            in (result["partial_error"])
        )


@pytest.mark.parametrize(
    ("parts", "likes", "match"),
    [
        ([], [], "Invalid parts: 0 parts for 0 tensors"),
        ([torch.ones(2)], [torch.ones(2), torch.ones(2)], "Invalid parts: 1 parts for 2 tensors"),
    ],
)
def test_sum_across_shards_rejects_parts_that_do_not_match(parts, likes, match):
    with pytest.raises(ValueError, match=match):
        sum_across_shards(parts, likes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tensor-parallel", type=Path)
    options = parser.parse_args()
    if options.tensor_parallel is not None:
        port = free_port()  # forked ranks start at once, with the modules this process imported
        mp.start_processes(tensor_parallel, (options.tensor_parallel, port), nprocs=TP_RANKS, start_method="fork")
    else:
        port = free_port()
        mp.start_processes(fit_layouts, (options.out, port), nprocs=RANKS, start_method="fork")
