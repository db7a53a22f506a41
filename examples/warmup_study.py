"""Does Adam need warmup, and does RAdam remove the need? A character Transformer on real text.

A small causal post-LayerNorm Transformer learns to predict the next character of the Python
documentation that ships with Python (``pydoc_data.topics``, about 465k characters; any UTF-8 text
file with ``--text-file``). The same model, data order and initialisation (per seed) are trained by

==========================  ====================================================================
``adam``                    Adam, no warmup
``adam_warmup``             Adam, linear warmup over ``--warmup-steps`` (the hand-tuned fix)
``adam_untuned_warmup``     Adam, Ma & Yarats' untuned linear warmup over ``2 / (1 - b2)`` steps
``adam_2k``                 Adam-2k: only ``v`` updated for the first ``k = 2 / (1 - b2)`` steps
``adam_eps``                Adam with ``eps = 1e-4`` (the paper's Adam-eps ablation)
``radam_sgd``               RAdam, momentum SGD below the threshold (the paper, ``torch.optim.RAdam``)
``radam``                   RAdam, no update below the threshold (``lightning_radam`` default)
==========================  ====================================================================

(``adam_untuned_exp_warmup``, the exponential untuned warmup, is available through ``--methods``.)
No gradient clipping, no dropout: nothing else hides a bad early update. Each run logs its
training loss and learning rate to TensorBoard (``<output-dir>/tensorboard/<method>/seed<k>``);
the final table gives the training loss (mean of the last 10% of steps) and the validation loss
(on the last 10% of the text) as mean and standard deviation over seeds, and how many seeds
stalled (final training loss within 0.25 nats of the unigram entropy of the text, i.e. the model
learnt little beyond character frequencies). ``loss_curves.png`` shows every run;
``gradient_histograms.png`` shows, per method (first seed), the distribution of log10|g| over the
first ``--histogram-steps`` steps, read back from the TensorBoard histograms. The table's header
names the CPU and the floating-point kernels in use (the losses of single runs depend on them).

Default: 6 post-LN layers, d=64, 4 heads, batch 16 x 32 characters, b2 = 0.98, lr 5e-3,
400 steps (four times 2 / (1 - b2)), seeds 0 1 2: Adam without warmup stalls in this regime,
while Adam with warmup trains. Each run also logs the gradient histograms of
:class:`~lightning_radam.callbacks.GradientHistogramMonitor` (``grad/log10_abs``, every step of its 50-step
early phase, then every ``--histogram-every`` steps; the quantiles, ``grad/distortion`` and the alarm, whose
warning Adam without warmup gets near step 10) and the ``radam/group0/*`` scalars of
:class:`~lightning_radam.callbacks.RectificationMonitor` (``rho_t``, ``r_t``, the variance of the
adaptive learning rate).

Example:
    python examples/warmup_study.py --output-dir runs/warmup
    python examples/warmup_study.py --d-model 128 --steps 1000 --seeds 0 1 2 3 4
    tensorboard --logdir runs/warmup/tensorboard
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L
from _common import machine_line, markdown_table, output_dir, torch_threads
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_radam import Adam2k, RAdam, linear_warmup, untuned_exponential_warmup, untuned_linear_warmup
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

DEFAULT_METHODS = ("adam", "adam_warmup", "adam_untuned_warmup", "adam_2k", "adam_eps", "radam_sgd", "radam")
STALL_MARGIN = 0.25  # nats above which a run counts as having learnt more than the unigram distribution


# ------------------------------------------------------------------------------------------------ data
def load_text(path: str | None) -> str:
    """The text to model: ``pydoc_data.topics`` (ships with Python) unless a file is given."""
    if path:
        return Path(path).read_text(encoding="utf-8")
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


class CharData:
    """Characters as integer ids, split 90/10 into training and validation text."""

    def __init__(self, text: str) -> None:
        if len(text) < 1000:
            raise ValueError(f"Invalid text: {len(text)} characters, expected at least 1000")
        self.vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.long)
        split = int(0.9 * len(ids))
        self.train, self.val = ids[:split], ids[split:]
        counts = torch.tensor(list(Counter(self.train.tolist()).values()), dtype=torch.float64)
        p = counts / counts.sum()
        self.unigram_entropy = float(-(p * p.log()).sum())  # nats: the loss of predicting frequencies only

    def batches(self, split: str, n_batches: int, batch_size: int, seq_len: int, seed: int) -> list[torch.Tensor]:
        """``n_batches`` random windows of ``seq_len + 1`` characters, reproducible from ``seed``."""
        ids = self.train if split == "train" else self.val
        if len(ids) <= seq_len + 1:
            raise ValueError(f"Invalid seq_len: {seq_len} (the {split} text has {len(ids)} characters)")
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(0, len(ids) - seq_len - 1, (n_batches, batch_size), generator=generator)
        window = torch.arange(seq_len + 1)
        return [ids[s.unsqueeze(1) + window] for s in starts]


# ----------------------------------------------------------------------------------------------- model
class CharTransformer(L.LightningModule):
    """Causal character Transformer with post-LayerNorm blocks (as in Vaswani et al.), no dropout."""

    def __init__(
        self, vocab_size: int, d_model: int, layers: int, heads: int, seq_len: int, make_optimizer: Callable
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        block = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=False)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)
        self.make_optimizer = make_optimizer
        self.train_losses: list[float] = []
        self.val_loss = math.nan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.embed(x) + self.position.weight[:t]
        return self.head(self.blocks(h, mask=self.mask[:t, :t], is_causal=True))

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self(batch[:, :-1])
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.train_losses.append(loss.item())
        self.log("train/loss", loss)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", self.loss(batch))

    def configure_optimizers(self):
        optimizer, factor = self.make_optimizer(self.parameters())
        if factor is None:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def make_optimizer_factory(method: str, args: argparse.Namespace) -> Callable:
    """``params -> (optimizer, LambdaLR factor or None)`` for one method of the study."""
    betas = (args.beta1, args.beta2)
    untuned_steps = round(2.0 / (1.0 - args.beta2))
    recipes = {
        "adam": lambda p: (torch.optim.Adam(p, args.lr, betas=betas), None),
        "adam_warmup": lambda p: (torch.optim.Adam(p, args.lr, betas=betas), linear_warmup(args.warmup_steps)),
        "adam_untuned_warmup": lambda p: (torch.optim.Adam(p, args.lr, betas=betas), untuned_linear_warmup(args.beta2)),
        "adam_untuned_exp_warmup": lambda p: (
            torch.optim.Adam(p, args.lr, betas=betas),
            untuned_exponential_warmup(args.beta2),
        ),
        "adam_2k": lambda p: (Adam2k(p, args.lr, betas=betas, k=untuned_steps), None),
        "adam_eps": lambda p: (torch.optim.Adam(p, args.lr, betas=betas, eps=args.adam_eps), None),
        "radam_sgd": lambda p: (RAdam(p, args.lr, betas=betas, degenerated_to_sgd=True), None),
        "radam": lambda p: (RAdam(p, args.lr, betas=betas, degenerated_to_sgd=False), None),
    }
    return recipes[method]


METHODS = (
    "adam",
    "adam_warmup",
    "adam_untuned_warmup",
    "adam_untuned_exp_warmup",
    "adam_2k",
    "adam_eps",
    "radam_sgd",
    "radam",
)


def callbacks(args: argparse.Namespace) -> list:
    """Callbacks attached to every run: the paper's gradient histograms, and rho_t / r_t / Var[l] scalars."""
    return [
        GradientHistogramMonitor(every_n_steps=args.histogram_every),
        RectificationMonitor(every_n_steps=args.log_every),
    ]


# ----------------------------------------------------------------------------------------------- study
def train_one(method: str, seed: int, data: CharData, args: argparse.Namespace, directory: Path) -> CharTransformer:
    L.seed_everything(seed, workers=True, verbose=False)
    model = CharTransformer(
        len(data.vocab), args.d_model, args.layers, args.heads, args.seq_len, make_optimizer_factory(method, args)
    )
    train_batches = data.batches("train", args.steps, args.batch_size, args.seq_len, seed=1000 + seed)
    val_batches = data.batches("val", args.val_batches, args.batch_size, args.seq_len, seed=0)  # the same for every run
    logger = TensorBoardLogger(
        str(directory), name="tensorboard", version=f"{method}/seed{seed}", default_hp_metric=False
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=args.steps, logger=logger, callbacks=callbacks(args),
        log_every_n_steps=args.log_every, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(train_batches, batch_size=None))
    results = trainer.validate(model, torch.utils.data.DataLoader(val_batches, batch_size=None), verbose=False)
    model.val_loss = results[0]["val/loss"]
    return model


def summarise(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        choices=METHODS,
        metavar="METHOD",
        help=f"any of {', '.join(METHODS)}",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per run")
    parser.add_argument("--layers", type=int, default=6, help="post-LN Transformer blocks")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=32, help="characters per training window")
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.98)
    parser.add_argument("--warmup-steps", type=int, default=200, help="length of adam_warmup's linear warmup")
    parser.add_argument("--adam-eps", type=float, default=1e-4, help="eps of adam_eps")
    parser.add_argument("--val-batches", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=5, help="TensorBoard scalar logging interval in steps")
    parser.add_argument("--histogram-every", type=int, default=2, help="gradient histogram interval in steps")
    parser.add_argument("--histogram-steps", type=int, default=60, help="steps shown in gradient_histograms.png")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 for torch's choice (one thread is fastest for these small models on a busy machine)",
    )
    parser.add_argument("--text-file", default=None, help="UTF-8 text to model instead of pydoc_data.topics")
    parser.add_argument("--output-dir", default="runs/warmup_study", help="where the PNG and TensorBoard events go")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    for name in (
        "steps",
        "layers",
        "d_model",
        "heads",
        "batch_size",
        "seq_len",
        "warmup_steps",
        "val_batches",
        "log_every",
        "histogram_every",
        "histogram_steps",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.d_model % args.heads:
        parser.error(f"--d-model ({args.d_model}) must be a multiple of --heads ({args.heads})")
    if not 0.0 < args.beta2 < 1.0:
        parser.error(f"--beta2 must be in (0, 1), got {args.beta2}")
    return args


def plot_curves(runs: dict, steps: int, unigram_entropy: float):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    window = max(1, steps // 30)
    for index, (method, models) in enumerate(runs.items()):
        color = f"C{index}"
        for k, model in enumerate(models):
            losses = torch.tensor(model.train_losses)
            smooth = losses.unfold(0, window, 1).mean(1) if len(losses) >= window else losses
            ax.plot(
                torch.arange(len(smooth)) + window,
                smooth,
                color=color,
                alpha=0.8,
                lw=1,
                label=method if k == 0 else None,
            )
    ax.axhline(unigram_entropy, color="grey", ls=":", lw=1, label="unigram entropy")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (nats/char, mean of {window} steps)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def quiet_lightning() -> None:
    """Keep the study's output to its own lines: no banners or hints from Lightning for each of the runs."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*validation_step.*but have no `val_dataloader`")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def read_gradient_histograms(run_dir: Path, last_step: int, edges: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The ``grad/log10_abs`` histograms of one run up to ``last_step``, re-binned onto ``edges`` (fractions)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={"histograms": 0})
    accumulator.Reload()
    steps, rows = [], []
    for event in accumulator.Histograms("grad/log10_abs"):
        if event.step > last_step:
            break
        value = event.histogram_value
        counts, _ = np.histogram(np.asarray(value.bucket_limit), bins=edges, weights=np.asarray(value.bucket))
        steps.append(event.step)
        rows.append(counts / max(1.0, counts.sum()))
    return steps, np.array(rows).reshape(len(rows), len(edges) - 1)


def plot_gradient_histograms(directory: Path, methods: Sequence[str], seed: int, last_step: int):
    """One panel per method: the distribution of log10|g| (colour) for each of the first steps (rows)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    edges = np.linspace(-10.0, 1.0, 89)
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, method in zip(axes.flat, methods, strict=False):  # axes may outnumber methods
        steps, fractions = read_gradient_histograms(
            directory / "tensorboard" / method / f"seed{seed}", last_step, edges
        )
        if steps:
            ax.pcolormesh(
                edges,
                np.arange(len(steps) + 1),
                np.where(fractions > 0, fractions, np.nan),
                norm=LogNorm(1e-5, 1.0),
                shading="flat",
            )
            ticks = np.arange(0, len(steps), max(1, len(steps) // 5))
            ax.set_yticks(ticks + 0.5, [str(steps[i]) for i in ticks])
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("log10 |g|")
    for ax in axes[:, 0]:
        ax.set_ylabel("optimizer step")
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    fig.suptitle(
        f"gradient magnitudes over the first {last_step} steps (seed {seed}; colour: fraction of elements)", fontsize=10
    )
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the study; returns per-method final losses, the table and the written files (used by the tests)."""
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run_study(args)


def run_study(args: argparse.Namespace) -> dict:
    """The study of ``main``, with its arguments parsed."""
    quiet_lightning()
    directory = output_dir(args.output_dir)
    data = CharData(load_text(args.text_file))
    tail = max(1, args.steps // 10)
    runs: dict[str, list[CharTransformer]] = {}
    started = time.perf_counter()
    for method in args.methods:
        for seed in args.seeds:
            run_start = time.perf_counter()
            model = train_one(method, seed, data, args, directory)
            runs.setdefault(method, []).append(model)
            final = statistics.fmean(model.train_losses[-tail:])
            print(
                f"{method:<24} seed {seed}: train {final:.3f}  val {model.val_loss:.3f}  "
                f"({time.perf_counter() - run_start:.0f} s)",
                flush=True,
            )
    elapsed = time.perf_counter() - started

    stall = data.unigram_entropy - STALL_MARGIN
    train = {m: [statistics.fmean(x.train_losses[-tail:]) for x in models] for m, models in runs.items()}
    val = {m: [x.val_loss for x in models] for m, models in runs.items()}
    rows = [
        [m, summarise(train[m]), summarise(val[m]), f"{sum(v > stall for v in train[m])}/{len(train[m])}"] for m in runs
    ]
    text = markdown_table(["method", f"train loss (last {tail} steps)", "val loss", "stalled"], rows)
    print(
        f"{args.layers} post-LN layers, d={args.d_model}, batch {args.batch_size}x{args.seq_len}, "
        f"b2={args.beta2}, lr={args.lr}, {args.steps} steps, seeds {' '.join(map(str, args.seeds))}; "
        f"unigram entropy {data.unigram_entropy:.3f} nats; {elapsed / 60:.1f} min"
    )
    machine = machine_line()
    print(machine)
    print(text)
    import matplotlib.pyplot as plt

    figures = {
        "loss_curves.png": plot_curves(runs, args.steps, data.unigram_entropy),
        "gradient_histograms.png": plot_gradient_histograms(
            directory, list(runs), args.seeds[0], min(args.steps, args.histogram_steps)
        ),
    }
    files = []
    for name, fig in figures.items():
        files.append(directory / name)
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    print("wrote", ", ".join(map(str, files)), "and TensorBoard events in", directory / "tensorboard")
    return {
        "train": train,
        "val": val,
        "unigram_entropy": data.unigram_entropy,
        "table": text,
        "machine": machine,
        "files": files,
        "output_dir": directory,
    }


if __name__ == "__main__":
    main()
