"""Helpers shared by the example scripts: tables in Markdown, the output directory, the machine line.

Not part of the library. Each example imports this file from its own directory, so the scripts run
as ``python examples/NAME.py`` from anywhere.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")  # files only: the examples never open a window


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Format rows as a GitHub Markdown table (what the README shows, exactly as printed)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def output_dir(path: str | os.PathLike) -> Path:
    """Create (if needed) and return the directory that receives PNGs and TensorBoard event files."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def cpu_name() -> str:
    """The CPU's model name (with family and model numbers on Linux, where a hypervisor may hide the name)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    if "model name" in fields:
        return f"{fields['model name']} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """Where a result was measured: CPU, torch, threads and the kernel families in use.

    Training runs at large learning rates are chaotic: the same seed ends elsewhere when the
    floating-point kernels change (ATen's vectorised CPU kernels, MKL's BLAS, oneDNN's convolutions),
    so every table carries this line.
    """

    def forced(*names: str) -> str:
        return " ".join(f"{name}={os.environ[name]}" for name in names if os.environ.get(name)) or "default"

    threads = torch.get_num_threads()
    aten = torch.backends.cpu.get_cpu_capability()
    blas = "MKL" if torch.backends.mkl.is_available() else "BLAS"
    return (
        f"CPU {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, {threads} thread{'s' * (threads > 1)}; "
        f"kernels: ATen {aten}, {blas} {forced('MKL_ENABLE_INSTRUCTIONS', 'MKL_CBWR')}, "
        f"oneDNN {forced('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA')}"
    )


def counting_line() -> str:
    """How the gradient histograms are counted on the CPU, for the benchmarks' machine line: in C, or through torch
    where the package was installed without its C extension (no C compiler)."""
    from lightning_radam.callbacks import counts_in_c

    return "histogram counts in C" if counts_in_c() else "histogram counts through torch (no C extension)"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (0: leave torch's choice), restoring the previous count after."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
