"""Cost of the monitoring callbacks per logged step, against one optimizer step and the naive histogram.

Measured in one process on the same parameters and gradients (default: 25M float32 parameters in
200 tensors): one step of RectificationMonitor + GradientHistogramMonitor at per-step logging (their
``on_before_optimizer_step`` and ``on_train_batch_end`` hooks, called on a real Trainer with a
TensorBoardLogger, event files written), one ``torch.optim.Adam(fused=True)`` step, and the common
pattern of ``logger.experiment.add_histogram(name, p.grad, step)`` per tensor. Times are medians of
repetitions interleaved in shuffled order; the ratios are what to compare across machines.

Example:
    python benchmarks/monitor_overhead.py                       # 25M parameters, 200 tensors, CPU
    python benchmarks/monitor_overhead.py --params 2000000 --repeats 3
    python benchmarks/monitor_overhead.py --threads 1           # steadier on a machine shared with other jobs
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor


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


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
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
    args = parser.parse_args()
    device = args.device
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as log_dir:
        model = ManyTensors(args.params, args.tensors, device)
        params = list(model.parameters())
        radam = RAdam(params, lr=1e-3)
        adam = torch.optim.Adam([torch.nn.Parameter(p.detach().clone()) for p in params], lr=1e-3, fused=True)
        for p, q in zip(params, (q for group in adam.param_groups for q in group["params"]), strict=True):
            q.grad = p.grad
        logger = TensorBoardLogger(log_dir, name="", version=0)
        trainer = L.Trainer(
            logger=logger, accelerator=device, devices=1, enable_progress_bar=False, enable_model_summary=False
        )
        trainer.strategy.optimizers = [radam]
        loop = trainer.fit_loop.epoch_loop
        configurations = {
            "both monitors (defaults: scalars, global histogram)": [RectificationMonitor(), GradientHistogramMonitor()],
            "  RectificationMonitor alone": [RectificationMonitor()],
            "  GradientHistogramMonitor alone": [GradientHistogramMonitor()],
            "both, GradientHistogramMonitor(subsample=4) (estimates)": [
                RectificationMonitor(),
                GradientHistogramMonitor(subsample=4),
            ],
            "both, every tensor's histogram and adaptive-lr statistic": [
                RectificationMonitor(layers=""),
                GradientHistogramMonitor(layers=""),
            ],
        }
        for callbacks in configurations.values():
            for callback in callbacks:
                callback.on_fit_start(trainer, model)
        step = 0

        def monitors(callbacks: list) -> Callable[[], float]:
            def run() -> float:
                nonlocal step
                loop._batches_that_stepped = step
                sync(device)
                start = time.perf_counter()
                for callback in callbacks:
                    callback.on_before_optimizer_step(trainer, model, radam)
                sync(device)
                elapsed = time.perf_counter() - start
                radam.step()  # not timed: the monitors read the step count it advances
                sync(device)
                start = time.perf_counter()
                for callback in callbacks:
                    callback.on_train_batch_end(trainer, model, None, None, step)
                sync(device)
                step += 1
                return elapsed + time.perf_counter() - start

            return run

        def adam_step() -> float:
            sync(device)
            start = time.perf_counter()
            adam.step()
            sync(device)
            return time.perf_counter() - start

        def naive() -> float:
            nonlocal step
            start = time.perf_counter()
            for name, p in model.named_parameters():
                logger.experiment.add_histogram(f"naive/{name}", p.grad, step)
            sync(device)
            step += 1
            return time.perf_counter() - start

        timed = {
            "torch.optim.Adam(fused=True) step": adam_step,
            **{name: monitors(cbs) for name, cbs in configurations.items()},
        }
        for run in timed.values():  # warm-up
            run()
        samples: dict[str, list[float]] = {name: [] for name in timed}
        shuffle = random.Random(0).shuffle  # noqa: S311 (a fixed, reproducible order, not a secret)
        for _ in range(
            args.repeats
        ):  # interleaved in a new order each time, so that load from other processes hits every row alike
            order = list(timed.items())
            shuffle(order)
            for name, run in order:
                samples[name].append(run())
                logger.experiment.flush()  # not timed: the event file's writer thread finishes before the next row
        samples["naive add_histogram per tensor"] = [naive() for _ in range(args.naive_repeats)]
        logger.experiment.flush()

    median = {name: statistics.median(values) * 1e3 for name, values in samples.items()}
    adam_ms, both_ms, naive_ms = (
        median["torch.optim.Adam(fused=True) step"],
        median[next(iter(configurations))],
        median["naive add_histogram per tensor"],
    )
    print(
        f"{args.params / 1e6:g}M float32 parameters in {args.tensors} tensors on {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; median of {args.repeats} interleaved repeats "
        f"({args.naive_repeats} for the naive loop)\n"
    )
    print("| per step | ms | x Adam step |")
    print("|---|---:|---:|")
    for name, ms in median.items():
        label = name.strip() if not name.startswith("  ") else "&nbsp;&nbsp;" + name.strip()
        print(f"| {label} | {ms:.1f} | {ms / adam_ms:.2f} |")
    print(f"\nboth monitors / Adam(fused) step: {both_ms / adam_ms:.2f}x (target <= 2x)")
    print(f"naive add_histogram / both monitors: {naive_ms / both_ms:.1f}x faster (target >= 20x)")
    sampled_ms = median["both, GradientHistogramMonitor(subsample=4) (estimates)"]
    print(
        f"with subsample=4: {sampled_ms / adam_ms:.2f}x the Adam step, {naive_ms / sampled_ms:.1f}x faster than naive"
    )


if __name__ == "__main__":
    main()
