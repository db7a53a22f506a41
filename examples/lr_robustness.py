"""How much does the choice of learning rate matter? SGD, Adam and RAdam on an image classifier.

The paper (Liu et al., ICLR 2020, Figure 5) reports that RAdam is more robust than Adam to the
learning rate on CIFAR-10 and ImageNet. This example trains the same small CNN (no batch norm, no
dropout, no schedule, no warmup) with momentum SGD (0.9), Adam and RAdam (both settings of
``degenerated_to_sgd`` with ``--methods``) for every learning rate in ``--lrs`` and several seeds,
and reports the test accuracy.

Data: scikit-learn's handwritten digits (1797 images of 8x8 pixels, shipped with scikit-learn;
80% train, 20% test) by default; CIFAR-10 when ``--data-dir`` points at the extracted
``cifar-10-batches-py`` folder of the python version of CIFAR-10 (or its parent). Those pickled
batches are read with ``pickle`` and NumPy: nothing is downloaded and torchvision is not needed.

Outputs in ``--output-dir``: ``accuracy_vs_lr.png``, and TensorBoard logs of every run
(``tensorboard/<method>_lr<lr>/seed<k>``: ``train/loss``, ``test/accuracy``, and with
``--histogram-every N`` the gradient histograms ``grad/log10_abs`` of
:class:`~lightning_radam.callbacks.GradientHistogramMonitor` ``(every_n_steps=N)``: every step of
its early phase, then every N steps). Prints a table of
test accuracy (mean and standard deviation over seeds) by method and learning rate, under a line
naming the CPU and the floating-point kernels in use: at large learning rates the runs are chaotic,
and a seed's accuracy changes with the kernels (ATen's vector width, MKL, oneDNN).

Example:
    python examples/lr_robustness.py --output-dir runs/lr
    python examples/lr_robustness.py --data-dir ~/data/cifar-10-batches-py --epochs 20 --train-subset 0
"""

from __future__ import annotations

import argparse
import logging
import pickle
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightning as L
from _common import machine_line, markdown_table, output_dir, torch_threads
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor

METHODS = ("sgd", "adam", "radam", "radam_sgd")
DEFAULT_METHODS = ("sgd", "adam", "radam")
DEFAULT_LRS = (0.1, 0.03, 0.01, 0.003)
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"


# ------------------------------------------------------------------------------------------------ data
def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(x_train, y_train, x_test, y_test)``: images (N, 1, 8, 8) in [0, 1], 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    split = int(0.8 * len(y))
    return x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")  # noqa: S301 (CIFAR-10 ships as pickles; the user names the files)
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(
            f"Invalid CIFAR-10 batch {path}: data of shape {data.shape} with {len(labels)} labels, "
            "expected (N, 3072) and N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 from the python-pickle batches, as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 arrays (N, 3, 32, 32) in [0, 1]; ``data_dir`` is the ``cifar-10-batches-py``
    folder (``data_batch_1`` ... ``data_batch_5``, ``test_batch``) or a folder containing it.

    Raises:
        FileNotFoundError: if the batch files are not there.
        ValueError: if a batch does not have CIFAR-10's layout.
    """
    root = Path(data_dir).expanduser()
    if not (root / CIFAR_TEST_FILE).is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    missing = [name for name in CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,) if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"Invalid data_dir: {data_dir} lacks the CIFAR-10 python batches {', '.join(missing)}")
    train = [_read_cifar_batch(root / name) for name in CIFAR_TRAIN_FILES]
    x_test, y_test = _read_cifar_batch(root / CIFAR_TEST_FILE)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train.astype(np.float32) / 255.0, y_train, x_test.astype(np.float32) / 255.0, y_test


def standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the training set's statistics."""
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
    return torch.from_numpy((x_train - mean) / std), torch.from_numpy((x_test - mean) / std)


# ----------------------------------------------------------------------------------------------- model
def make_cnn(channels: int, size: int, width: int, classes: int = 10) -> nn.Sequential:
    """Conv-ReLU-MaxPool blocks (width doubling) down to 4x4, then a 2-layer head. No normalisation layers."""
    layers: list[nn.Module] = []
    while size > 4:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, width, size = width, 2 * width, size // 2
    layers += [nn.Flatten(), nn.Linear(channels * size * size, 128), nn.ReLU(), nn.Linear(128, classes)]
    return nn.Sequential(*layers)


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, make_optimizer: Callable) -> None:
        super().__init__()
        self.net = net
        self.make_optimizer = make_optimizer
        self.correct = 0
        self.seen = 0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        self.correct += int((self.net(x).argmax(1) == y).sum())
        self.seen += len(y)

    def on_test_epoch_end(self) -> None:
        self.log("test/accuracy", self.correct / max(1, self.seen))

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


def make_optimizer_factory(method: str, lr: float) -> Callable:
    recipes = {
        "sgd": lambda p: torch.optim.SGD(p, lr, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr),
        "radam": lambda p: RAdam(p, lr, degenerated_to_sgd=False),
        "radam_sgd": lambda p: RAdam(p, lr, degenerated_to_sgd=True),
    }
    return recipes[method]


def train_one(method: str, lr: float, seed: int, data: tuple, args: argparse.Namespace, directory: Path) -> float:
    """Train one model; returns its test accuracy."""
    x_train, y_train, x_test, y_test = data
    L.seed_everything(seed, workers=True, verbose=False)
    net = make_cnn(x_train.shape[1], x_train.shape[2], args.width)
    model = Classifier(net, make_optimizer_factory(method, lr))
    generator = torch.Generator().manual_seed(seed)
    train = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True, generator=generator
    )
    test = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_test, y_test), batch_size=1000)
    logger = TensorBoardLogger(
        str(directory), name="tensorboard", version=f"{method}_lr{lr:g}/seed{seed}", default_hp_metric=False
    )
    monitors = [GradientHistogramMonitor(every_n_steps=args.histogram_every)] if args.histogram_every else []
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=args.epochs, logger=logger, log_every_n_steps=args.log_every,
        callbacks=monitors, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=train)
    return trainer.test(model, test, verbose=False)[0]["test/accuracy"]


# ----------------------------------------------------------------------------------------------- study
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS), help="learning rates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="channels of the first conv layer (doubling per block)")
    parser.add_argument(
        "--data-dir", default=None, help="CIFAR-10 python batches (cifar-10-batches-py); default: scikit-learn digits"
    )
    parser.add_argument(
        "--train-subset", type=int, default=10000, help="with --data-dir: first N training images (0: all 50000)"
    )
    parser.add_argument("--log-every", type=int, default=10, help="TensorBoard logging interval in steps")
    parser.add_argument(
        "--histogram-every",
        type=int,
        default=0,
        help="GradientHistogramMonitor(every_n_steps=N): grad/log10_abs at every step of its early phase, then every"
        " N optimizer steps (1: every step; 0: no gradient histograms)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 for torch's choice (one thread is fastest for these small models on a busy machine)",
    )
    parser.add_argument("--output-dir", default="runs/lr_robustness", help="where the PNG and TensorBoard events go")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0, got {args.threads}")
    for name in ("epochs", "batch_size", "width", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.train_subset < 0:
        parser.error(f"--train-subset must be >= 0, got {args.train_subset}")
    if args.histogram_every < 0:
        parser.error(f"--histogram-every must be >= 0, got {args.histogram_every}")
    bad = [lr for lr in args.lrs if not lr > 0]
    if bad:
        parser.error(f"--lrs must be positive, got {bad[0]}")
    return args


def summarise(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def plot_accuracy(accuracy: dict, lrs: Sequence[float], dataset: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, by_lr in accuracy.items():
        means = [100 * statistics.fmean(by_lr[lr]) for lr in lrs]
        spread = [100 * (statistics.stdev(by_lr[lr]) if len(by_lr[lr]) > 1 else 0.0) for lr in lrs]
        ax.errorbar(lrs, means, yerr=spread, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"test accuracy on {dataset} (%)")
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the sweep; returns accuracies by method and lr, the table and the written files (used by the tests)."""
    args = parse_args(argv)
    with torch_threads(args.threads):
        return run_study(args)


def run_study(args: argparse.Namespace) -> dict:
    """The sweep of ``main``, with its arguments parsed."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    directory = output_dir(args.output_dir)
    if args.data_dir:
        dataset = "CIFAR-10"
        x_train, y_train, x_test, y_test = load_cifar10(args.data_dir)
        if args.train_subset:
            x_train, y_train = x_train[: args.train_subset], y_train[: args.train_subset]
    else:
        dataset = "digits"
        x_train, y_train, x_test, y_test = load_digits_split()
    x_train, x_test = standardise(x_train, x_test)
    data = (x_train, torch.from_numpy(y_train), x_test, torch.from_numpy(y_test))

    accuracy: dict[str, dict[float, list[float]]] = {}
    started = time.perf_counter()
    for method in args.methods:
        for lr in args.lrs:
            for seed in args.seeds:
                acc = train_one(method, lr, seed, data, args, directory)
                accuracy.setdefault(method, {}).setdefault(lr, []).append(acc)
            per_seed = " ".join(f"{100 * a:.1f}" for a in accuracy[method][lr])
            print(
                f"{method:<10} lr {lr:<6g}: test accuracy {summarise(accuracy[method][lr])} % (seeds: {per_seed})",
                flush=True,
            )
    elapsed = time.perf_counter() - started

    header = ["method"] + [f"lr={lr:g}" for lr in args.lrs]
    rows = [[method] + [summarise(by_lr[lr]) for lr in args.lrs] for method, by_lr in accuracy.items()]
    text = markdown_table(header, rows)
    machine = machine_line()
    print(
        f"{dataset}: {len(x_train)} training / {len(x_test)} test images, CNN width {args.width}, "
        f"{args.epochs} epochs, batch {args.batch_size}, seeds {' '.join(map(str, args.seeds))}; "
        f"test accuracy in %, mean ± sd; {elapsed / 60:.1f} min"
    )
    print(machine)
    print(text)
    fig = plot_accuracy(accuracy, args.lrs, dataset)
    png = directory / "accuracy_vs_lr.png"
    fig.savefig(png, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    print("wrote", png, "and TensorBoard events in", directory / "tensorboard")
    return {
        "accuracy": accuracy,
        "dataset": dataset,
        "table": text,
        "machine": machine,
        "files": [png],
        "output_dir": directory,
    }


if __name__ == "__main__":
    main()
