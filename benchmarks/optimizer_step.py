"""Time one optimizer step of RAdam implementations against the memory-bandwidth floor, in one process.

For each parameter shape set, every path steps the same parameters and gradients. Reported per path:
the time of a step in the rectified phase (ms/step: the fastest of ``--steps`` steps in each of
``--rounds`` rounds, the least disturbed measurement on a shared machine; paths and floor kernels
take turns step by step, as many at once as ``--state-budget`` allows), its ratio to the bandwidth floor
and to ``torch.optim.RAdam(foreach=True)``, and the peak memory a step allocates beyond the optimizer's
state (over the first steps, unrectified ones included).

The floor is the time to read theta, g, m, v and write theta, m, v once (7 tensors' worth of bytes,
28 bytes per fp32 parameter), at the highest bandwidth that in-place kernels (``a += b``,
``a += b * c``) reach on these tensors in the same run. Absolute times drift between runs on a
shared machine: compare the ratios, which come from one run.

Peers are timed when installed (``pip install -e ".[bench]"``): optimi's RAdam (torch-optimi) and
pytorch_optimizer's RAdam; a missing one is reported as skipped.

Example:
    python benchmarks/optimizer_step.py                      # the table, all shapes
    python benchmarks/optimizer_step.py --shapes 25M/200 --json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lightning_radam import RAdam

LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
WARMUP_STEPS = 6  # steps 1-5 are unrectified (threshold 5, beta2 0.999): the timed steps are all rectified


def _resnet50_shapes() -> list[tuple[int, ...]]:
    """Parameter shapes of a ResNet-50 (161 tensors, 25.6M parameters, most of them small)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            for c_in, c_out, k in ((in_channels, width, 1), (width, width, 3), (width, 4 * width, 1)):
                shapes += [(c_out, c_in, k, k), (c_out,), (c_out,)]
            if block == 0:
                shapes += [(4 * width, in_channels, 1, 1), (4 * width,), (4 * width,)]
            in_channels = 4 * width
    return shapes + [(1000, 2048), (1000,)]


SHAPES: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "25M/200": lambda: [(250, 500)] * 200,
    "resnet50": _resnet50_shapes,
    "100M/1": lambda: [(100_000_000,)],
}


def _peers() -> dict[str, Callable[..., torch.optim.Optimizer] | None]:
    try:
        import optimi
    except ImportError:
        optimi = None
    try:
        import pytorch_optimizer
    except ImportError:
        pytorch_optimizer = None
    return {
        "optimi RAdam (foreach)": optimi and (lambda ps: optimi.RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=True)),
        "optimi RAdam (for-loop)": optimi and (lambda ps: optimi.RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=False)),
        "pytorch_optimizer RAdam": pytorch_optimizer
        and (lambda ps: pytorch_optimizer.RAdam(ps, lr=LR, betas=BETAS, eps=EPS)),
    }


def paths() -> dict[str, Callable[..., torch.optim.Optimizer] | None]:
    """Name -> optimizer factory (None when the package is not installed)."""
    return {
        "ours RAdam (fused)": lambda ps: RAdam(ps, lr=LR, betas=BETAS, eps=EPS, fused=True),
        "ours RAdam (foreach)": lambda ps: RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=True),
        "ours RAdam (for-loop)": lambda ps: RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=False, fused=False),
        "torch RAdam (foreach)": lambda ps: torch.optim.RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=True),
        "torch RAdam (for-loop)": lambda ps: torch.optim.RAdam(ps, lr=LR, betas=BETAS, eps=EPS, foreach=False),
        "torch Adam (fused)": lambda ps: torch.optim.Adam(ps, lr=LR, betas=BETAS, eps=EPS, fused=True),
        **_peers(),
    }


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors that ops allocate while the mode is active (outputs not aliasing an input)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in inputs or key in self.live or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._free, key)
        return out


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    storages = {}
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                storages[value.untyped_storage().data_ptr()] = value.untyped_storage().nbytes()
    return sum(storages.values())


def _timed(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    """Seconds one call of ``fn`` takes."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run_shape(
    name: str, shape_list, factories, *, rounds: int, steps: int, device: str, dtype: torch.dtype, state_budget: float
) -> dict[str, Any]:
    """Time every path on one shape set; the floor kernels and the paths take turns, step by step."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    generator = torch.Generator(device=device).manual_seed(0)
    params = [torch.randn(s, device=device, dtype=dtype, generator=generator) for s in shape_list]
    for p in params:
        p.grad = 1e-3 * torch.randn(p.shape, device=device, dtype=dtype, generator=generator)
    grads = [p.grad for p in params]
    numel = sum(p.numel() for p in params)
    size = numel * params[0].element_size()
    buffers = [torch.zeros_like(p) for p in params]
    floor_kernels = {  # in-place kernels over tensors of these shapes: (call, bytes moved)
        "a += b": (lambda: torch._foreach_add_(buffers, grads), 3 * size),
        "a += b * c": (lambda: torch._foreach_addcmul_(buffers, grads, params), 4 * size),  # three distinct tensors
    }
    results: dict[str, dict[str, Any]] = {
        path: {"skipped": "not installed"} for path, f in factories.items() if f is None
    }
    available = [path for path, f in factories.items() if f is not None]
    # Paths take turns within a chunk, so a burst of load on a shared machine hits them alike; a chunk
    # holds as many optimizers as their state (2 tensors the size of the parameters) lets into the budget.
    per_chunk = max(1, int(state_budget * 2**30 // (2 * size)))
    chunks = [available[i : i + per_chunk] for i in range(0, len(available), per_chunk)]
    best = {kernel: float("inf") for kernel in floor_kernels}
    for round_index in range(rounds):
        for chunk in chunks:
            optimizers = {}
            for path in chunk:
                optimizers[path] = optimizer = factories[path](params)
                record = results.setdefault(path, {"ms": float("inf")})
                if round_index == 0:  # peak memory over the first steps, unrectified ones included
                    with PeakMemory() as memory:
                        for _ in range(WARMUP_STEPS):
                            optimizer.step()
                    record["peak_extra_MB"] = max(0.0, (memory.peak - _state_bytes(optimizer)) / 2**20)
                else:
                    for _ in range(WARMUP_STEPS):
                        optimizer.step()
            for call, _ in floor_kernels.values():
                call()  # warm-up
            for _ in range(steps):
                for kernel, (call, _) in floor_kernels.items():
                    best[kernel] = min(best[kernel], _timed(call, sync))
                for path, optimizer in optimizers.items():
                    results[path]["ms"] = min(results[path]["ms"], 1e3 * _timed(optimizer.step, sync))
            del optimizers, optimizer
            gc.collect()
    bandwidth = max(moved / best[kernel] for kernel, (_, moved) in floor_kernels.items())
    floor_ms = 1e3 * 7 * size / bandwidth  # read theta, g, m, v; write theta, m, v
    reference = results.get("torch RAdam (foreach)", {}).get("ms")
    for record in results.values():
        if "ms" in record:
            record["x_floor"] = record["ms"] / floor_ms
            record["x_torch_radam_foreach"] = record["ms"] / reference if reference else None
    return {
        "shape": name, "tensors": len(params), "parameters": numel, "floor_ms": floor_ms,
        "bandwidth_GBps": bandwidth / 1e9, "paths": {path: results[path] for path in factories},
    }  # fmt: skip


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_report(report: dict[str, Any], markdown: bool = False) -> None:
    """The tables: aligned text, or Markdown as in the README."""
    m = report["machine"]
    print(f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}; device {report['device']}, {report['dtype']}; "
          f"fastest of {report['steps']} rectified steps x {report['rounds']} rounds")  # fmt: skip
    header = ("path", "ms/step", "x floor", "x torch RAdam (foreach)", "peak extra MB")
    row = (
        (lambda cells: "| " + " | ".join(cells) + " |")
        if markdown
        else (lambda c: f"  {c[0]:<26}{c[1]:>9}{c[2]:>9}{c[3]:>25}{c[4]:>15}")
    )
    for shape in report["shapes"]:
        print(f"\n{shape['shape']}: {shape['parameters'] / 1e6:.1f}M parameters in {shape['tensors']} tensors; "
              f"floor {shape['floor_ms']:.1f} ms at {shape['bandwidth_GBps']:.1f} GB/s\n")  # fmt: skip
        print(row(header))
        if markdown:
            print("|---|---:|---:|---:|---:|")
        for path, r in shape["paths"].items():
            if "skipped" in r:
                print(row((path, "skipped", r["skipped"], "", "")))
                continue
            ratio = f"{r['x_torch_radam_foreach']:.2f}" if r["x_torch_radam_foreach"] is not None else "-"
            print(row((path, f"{r['ms']:.1f}", f"{r['x_floor']:.2f}", ratio, f"{r['peak_extra_MB']:.1f}")))
        ms = {path: r["ms"] for path, r in shape["paths"].items() if "ms" in r}
        ours, adam, reference = (
            ms.get("ours RAdam (fused)"),
            ms.get("torch Adam (fused)"),
            ms.get("torch RAdam (foreach)"),
        )
        if ours and adam and reference:
            x_floor = shape["paths"]["ours RAdam (fused)"]["x_floor"]
            print(
                f"{'' if markdown else '  '}ours fused = {ours / adam:.2f}x torch Adam (fused), "
                f"{x_floor:.2f}x the floor, "
                f"{reference / ours:.1f}x faster than torch RAdam (foreach)"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="parameter shape sets (default: all)"
    )
    parser.add_argument(
        "--paths", nargs="+", metavar="SUBSTRING", help="only the paths whose name contains one of these"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds; each path keeps its fastest step (default: 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path and round (default: 5)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: cuda if available, else cpu"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="default: float32"
    )
    parser.add_argument(
        "--state-budget", type=float, default=2.0, help="GiB of optimizer state alive at once (default: 2)"
    )
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument(
        "--from-json", metavar="PATH", help="print the table of a saved --json report instead of measuring"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    factories = paths()
    if args.paths:
        factories = {k: v for k, v in factories.items() if any(s in k for s in args.paths)}
    dtype = getattr(torch, args.dtype)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        print_report(report, args.markdown)
        return report
    report = {
        "machine": machine(), "device": args.device, "dtype": args.dtype, "rounds": args.rounds, "steps": args.steps,
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "shapes": [
            run_shape(
                name, SHAPES[name](), factories, rounds=args.rounds, steps=args.steps, device=args.device, dtype=dtype,
                state_budget=args.state_budget,
            )
            for name in args.shapes
        ],
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, args.markdown)
    return report


if __name__ == "__main__":
    main()
