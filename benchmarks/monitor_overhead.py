"""Cost of the monitoring callbacks per logged step, against one optimizer step and the naive histogram.

Measured in one process on the same parameters and gradients (default: 25M float32 parameters in
200 tensors): one logged step of RectificationMonitor + GradientHistogramMonitor (their
``on_before_optimizer_step`` and ``on_train_batch_end`` hooks, called on a real Trainer with a
TensorBoardLogger, event files written), one ``torch.optim.Adam(fused=True)`` step, and the common
pattern of ``logger.experiment.add_histogram(name, p.grad, step)`` per tensor. Times are medians of
repetitions interleaved in shuffled order; the ratios are what to compare across machines.

A logged step is timed after the early phase (``every_n_steps=1``, steps from ``early_steps`` on); one row times
the early phase itself, where the histogram monitor also writes ``{prefix}/log10_abs/early``. The same monitors on
the same number of tensors of 16 elements each give the cost that does not grow with the model: the fixed cost of a
logged step, and with the full size the cost per gradient element (a straight line through the two sizes).

Example:
    python benchmarks/monitor_overhead.py                       # 25M parameters, 200 tensors, CPU
    python benchmarks/monitor_overhead.py --params 2000000 --repeats 3
    python benchmarks/monitor_overhead.py --threads 1           # steadier on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _common import counting_line, machine_line  # examples/_common.py: the machine line every table carries

ADAM = "torch.optim.Adam(fused=True) step"
BOTH = "both monitors, a logged step"
SMALL_ELEMENTS = 16  # per tensor, for the fixed cost
TARGET_X_ADAM = 2.0
TARGET_X_NAIVE = 20.0


class ManyTensors(L.LightningModule):
    def __init__(self, numel: int, tensors: int, device: str) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        size = numel // tensors
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(size, device=device)) for _ in range(tensors)
        )
        for p in self.weights:  # gradients spread over six decades, as in a real network
            scale = 10.0 ** -torch.empty(()).uniform_(0.0, 6.0, generator=generator).item()
            p.grad = (torch.randn(size, generator=generator) * scale).to(device)


@dataclass
class Monitored:
    """Monitors driven through their hooks on one model, from step ``step`` on (one logged step per call)."""

    monitors: list
    model: ManyTensors
    step: int


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=int, default=25_000_000, help="number of parameters (default: 25M)")
    parser.add_argument("--tensors", type=int, default=200, help="number of parameter tensors (default: 200)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions of each step (default: 10)")
    parser.add_argument(
        "--naive-repeats", type=int, default=2, help="repetitions of the naive add_histogram loop (default: 2)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads, for every row alike (default: torch's)"
    )
    args = parser.parse_args(argv)
    early_steps = RectificationMonitor().early_steps
    if not 1 <= args.repeats < early_steps:  # the early-phase row logs steps 0, 1, ... below early_steps
        parser.error(f"--repeats must be in [1, {early_steps - 1}], got {args.repeats}")
    if args.tensors < 1 or args.params < args.tensors * SMALL_ELEMENTS * 2:
        parser.error(f"--params ({args.params}) must be at least {2 * SMALL_ELEMENTS} x --tensors ({args.tensors})")
    if args.naive_repeats < 1:
        parser.error(f"--naive-repeats must be >= 1, got {args.naive_repeats}")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = args.device
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as log_dir:
        model = ManyTensors(args.params, args.tensors, device)
        small = ManyTensors(args.tensors * SMALL_ELEMENTS, args.tensors, device)
        optimizers = {id(m): RAdam(m.parameters(), lr=1e-3) for m in (model, small)}
        params = list(model.parameters())
        adam = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-3, fused=True)
        for p, q in zip(params, (q for group in adam.param_groups for q in group["params"]), strict=True):
            q.grad = p.grad
        logger = TensorBoardLogger(log_dir, name="", version=0)
        trainer = L.Trainer(
            logger=logger, accelerator=device, devices=1, enable_progress_bar=False, enable_model_summary=False
        )
        trainer.strategy.optimizers = [optimizers[id(model)]]
        loop = trainer.fit_loop.epoch_loop

        def every_step(**kwargs: object) -> list:
            return [RectificationMonitor(every_n_steps=1), GradientHistogramMonitor(every_n_steps=1, **kwargs)]

        early_steps = RectificationMonitor().early_steps
        configurations = {
            BOTH: Monitored(every_step(), model, early_steps),
            "both monitors, an early-phase step (defaults)": Monitored(
                [RectificationMonitor(), GradientHistogramMonitor()], model, 0
            ),
            "  RectificationMonitor alone": Monitored([RectificationMonitor(every_n_steps=1)], model, early_steps),
            "  GradientHistogramMonitor alone": Monitored(
                [GradientHistogramMonitor(every_n_steps=1)], model, early_steps
            ),
            f"both monitors, a logged step, {args.tensors} tensors of {SMALL_ELEMENTS} elements": Monitored(
                every_step(), small, early_steps
            ),
            "both, GradientHistogramMonitor(subsample=4) (estimates)": Monitored(
                every_step(subsample=4), model, early_steps
            ),
            "both, every tensor's histogram and adaptive-lr statistic": Monitored(
                [
                    RectificationMonitor(every_n_steps=1, layers=""),
                    GradientHistogramMonitor(every_n_steps=1, layers=""),
                ],
                model,
                early_steps,
            ),
        }
        for row in configurations.values():
            for callback in row.monitors:
                callback.on_fit_start(trainer, row.model)

        def monitors(row: Monitored) -> Callable[[], float]:
            optimizer = optimizers[id(row.model)]

            def run() -> float:
                loop._batches_that_stepped = row.step
                sync(device)
                start = time.perf_counter()
                for callback in row.monitors:
                    callback.on_before_optimizer_step(trainer, row.model, optimizer)
                sync(device)
                elapsed = time.perf_counter() - start
                optimizer.step()  # not timed: the monitors read the step count it advances
                sync(device)
                start = time.perf_counter()
                for callback in row.monitors:
                    callback.on_train_batch_end(trainer, row.model, None, None, row.step)
                sync(device)
                row.step += 1
                return elapsed + time.perf_counter() - start

            return run

        def adam_step() -> float:
            sync(device)
            start = time.perf_counter()
            adam.step()
            sync(device)
            return time.perf_counter() - start

        naive_step = 0

        def naive() -> float:
            nonlocal naive_step
            start = time.perf_counter()
            for name, p in model.named_parameters():
                logger.experiment.add_histogram(f"naive/{name}", p.grad, naive_step)
            sync(device)
            naive_step += 1
            return time.perf_counter() - start

        timed = {ADAM: adam_step, **{name: monitors(row) for name, row in configurations.items()}}
        for run in timed.values():  # warm-up
            run()
        samples: dict[str, list[float]] = {name: [] for name in timed}
        shuffle = random.Random(0).shuffle  # noqa: S311 (a fixed, reproducible order, not a secret)
        for _ in range(args.repeats):  # interleaved in a new order each time, so that load hits every row alike
            order = list(timed.items())
            shuffle(order)
            for name, run in order:
                samples[name].append(run())
                logger.experiment.flush()  # not timed: the event file's writer thread finishes before the next row
        samples["naive add_histogram per tensor"] = [naive() for _ in range(args.naive_repeats)]
        logger.experiment.flush()

    median = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    return report(args, median)


def report(args: argparse.Namespace, median: dict[str, float]) -> dict[str, float]:
    """Print the table, the targets and the two costs a logged step is made of; return the figures."""
    adam_ms, both_ms = median[ADAM], median[BOTH]
    naive_ms = median["naive add_histogram per tensor"]
    small_ms = next(ms for name, ms in median.items() if name.startswith(f"{BOTH}, "))
    small_numel = args.tensors * SMALL_ELEMENTS
    numel = args.params // args.tensors * args.tensors
    per_element_ns = (both_ms - small_ms) / (numel - small_numel) * 1e6
    fixed_us = small_ms * 1e3 - per_element_ns * small_numel / 1e3
    print(f"{args.params / 1e6:g}M float32 parameters in {args.tensors} tensors on {args.device}")
    print(f"{machine_line()}; {counting_line()}")
    print(f"median of {args.repeats} interleaved repeats ({args.naive_repeats} for the naive loop)\n")
    print("| per step | ms | x Adam step |")
    print("|---|---:|---:|")
    for name, ms in median.items():
        label = name.strip() if not name.startswith("  ") else "&nbsp;&nbsp;" + name.strip()
        print(f"| {label} | {ms:.2f} | {ms / adam_ms:.2f} |")
    print(
        f"\nboth monitors / Adam(fused) step: {both_ms / adam_ms:.2f}x (target <= {TARGET_X_ADAM:g}x: "
        f"{'met' if both_ms / adam_ms <= TARGET_X_ADAM else 'NOT met'})"
    )
    print(
        f"naive add_histogram / both monitors: {naive_ms / both_ms:.1f}x faster (target >= {TARGET_X_NAIVE:g}x: "
        f"{'met' if naive_ms / both_ms >= TARGET_X_NAIVE else 'NOT met'})"
    )
    sampled_ms = median["both, GradientHistogramMonitor(subsample=4) (estimates)"]
    print(
        f"with subsample=4: {sampled_ms / adam_ms:.2f}x the Adam step, {naive_ms / sampled_ms:.1f}x faster than naive"
    )
    print(
        f"a logged step of both monitors = fixed {fixed_us:.0f} us ({fixed_us / args.tensors:.1f} us per tensor, "
        f"{args.tensors} tensors) + {per_element_ns:.3f} ns per gradient element "
        f"({per_element_ns * numel / 1e6:.1f} ms for {numel / 1e6:g}M)"
    )
    return {
        "x_adam": both_ms / adam_ms,
        "x_naive": naive_ms / both_ms,
        "fixed_us": fixed_us,
        "per_element_ns": per_element_ns,
    }


if __name__ == "__main__":
    main()
