"""Train a small float64 model with RAdam and both monitors, on 1 process or 2 (DDP, gloo, CPU); save the parameters.

Run by tests/test_reliability.py as a separate program, because Lightning's ``ddp`` strategy
re-launches the running script for each extra rank. With ``--devices 2`` each rank sees half of
every global batch (a contiguous slice, no shuffling), so both runs optimise on the same global
batches and should agree to float64 round-off.
"""

import argparse
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdamMixin
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor


class Regressor(RAdamMixin, L.LightningModule):
    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    L.seed_everything(0, verbose=False)
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.global_batch * args.steps, 8, generator=g)
    y = torch.sin(x.sum(1, keepdim=True))
    # Each rank takes its contiguous slice of every global batch (our own sharding, no shuffling).
    local = args.global_batch // args.devices
    rank = int(__import__("os").environ.get("LOCAL_RANK", 0))
    shard = torch.arange(len(x)).view(args.steps, args.devices, local)[:, rank].flatten()
    loader = DataLoader(TensorDataset(x[shard], y[shard]), batch_size=local, shuffle=False)
    model = Regressor(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    strategy = "ddp" if args.devices > 1 else "auto"
    logger = TensorBoardLogger(args.out, name="tb", version=0)
    # on_distortion="stop": every rank takes the stop decision at each step of the alarm's window (a collective)
    monitors = [RectificationMonitor(), GradientHistogramMonitor(layers=r"weight", on_distortion="stop")]
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=strategy, max_steps=args.steps, logger=logger,
        log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        use_distributed_sampler=False, callbacks=monitors,
    )  # fmt: skip
    trainer.fit(model, loader)
    state = trainer.optimizers[0].state_dict()
    if trainer.global_rank == 0:
        torch.save({"params": [p.detach() for p in model.parameters()], "optimizer": state}, args.out / "result.pt")
    else:
        torch.save({"params": [p.detach() for p in model.parameters()]}, args.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
