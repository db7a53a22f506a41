"""Simulate the variance of Adam's adaptive learning rate, with and without RAdam's rectification.

The paper's simulation (Liu et al., ICLR 2020, section 5.3 and Figure 7): gradients are drawn
i.i.d. from N(mu, 1) for several means mu, the second moment is averaged as Adam does
(``v_t = b2 v_{t-1} + (1 - b2) g_t^2``), and over thousands of independent trajectories we measure

* ``Var[l_t]`` of the adaptive learning rate ``l_t = sqrt((1 - b2^t) / v_t)``: huge in the first
  steps, shrinking as ``v_t`` averages more gradients;
* ``Var[r_t l_t]``, with RAdam's rectification term ``r_t``: nearly flat from the first rectified
  step on (``r_t = 0`` before it).

A second figure compares the exact variance of ``sqrt(rho / chi^2_rho)`` with the first-order
approximation ``r_t`` is built from, over rho, with the simulated ``Var[l_t]`` (mu = 0) at
``rho_t`` on top.

Outputs in ``--output-dir``: ``variance_over_steps.png``, ``variance_over_rho.png``, TensorBoard
scalars ``var_l_t/mu=<mu>`` and ``var_r_t_l_t/mu=<mu>`` (x axis: step t) and both figures under
``figures/``. Prints a table of the variances at t = 6, 100, 1000 and the last step.

Example:
    python examples/variance_simulation.py --output-dir runs/variance
    python examples/variance_simulation.py --trajectories 50000 --steps 20000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, markdown_table, output_dir

from lightning_radam.rectification import r_t, rho_inf, rho_t, variance_adaptive_lr, variance_adaptive_lr_first_order

DEFAULT_MUS = (0.0, 0.001, 0.01, 0.1, 1.0, 10.0)
TABLE_STEPS = (6, 100, 1000)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--trajectories", type=int, default=5000, help="independent trajectories per mu")
    parser.add_argument("--steps", type=int, default=6000, help="steps t per trajectory")
    parser.add_argument("--beta2", type=float, default=0.999, help="second-moment decay b2")
    parser.add_argument(
        "--mus", type=float, nargs="+", default=list(DEFAULT_MUS), help="gradient means mu (g ~ N(mu, 1))"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="torch device for the simulation, e.g. cuda")
    parser.add_argument("--output-dir", default="runs/variance_simulation", help="where PNGs and TensorBoard events go")
    args = parser.parse_args(argv)
    if args.trajectories < 2:
        parser.error(f"--trajectories must be >= 2, got {args.trajectories}")
    if args.steps < 6:
        parser.error(f"--steps must be >= 6 (the first rectified step), got {args.steps}")
    if not 0.6 < args.beta2 < 1.0:
        parser.error(f"--beta2 must be in (0.6, 1) so that some step is rectified, got {args.beta2}")
    return args


def simulate(
    mus: Sequence[float],
    trajectories: int,
    steps: int,
    beta2: float,
    seed: int = 0,
    device: str = "cpu",
    chunk: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample variances of ``l_t`` and ``r_t l_t`` over trajectories.

    Returns:
        ``(var_l, var_rl)``, float64 arrays of shape ``(len(mus), steps)``; column ``t - 1`` is step ``t``.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    mu = torch.tensor(list(mus), dtype=torch.float64, device=device).unsqueeze(1)
    v = torch.zeros(len(mus), trajectories, dtype=torch.float64, device=device)
    var_l = torch.empty(len(mus), steps, dtype=torch.float64, device=device)
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    bias_correction2 = -torch.expm1(t * np.log(beta2)).to(device)
    for start in range(0, steps, chunk):
        # chunks of steps: one random draw and one variance reduction per chunk, not per step
        g2 = (
            mu.unsqueeze(1)
            + torch.randn(
                len(mus),
                min(chunk, steps - start),
                trajectories,
                generator=generator,
                dtype=torch.float64,
                device=device,
            )
        ).square_()
        g2.mul_(1.0 - beta2)
        for i in range(g2.shape[1]):
            v = g2[:, i].add_(v, alpha=beta2)  # v_t = b2 v_{t-1} + (1 - b2) g_t^2, written over g_t^2
        v = v.clone()  # the chunk is overwritten next
        l_t = g2.div_(bias_correction2[start : start + g2.shape[1]].view(1, -1, 1)).reciprocal_().sqrt_()
        var_l[:, start : start + g2.shape[1]] = l_t.var(dim=2)
    # r_t is one number per step, so Var[r_t l_t] = r_t^2 Var[l_t]
    var_rl = var_l * r_t(t, beta2).to(device).square()
    return var_l.cpu().numpy(), var_rl.cpu().numpy()


def table(mus: Sequence[float], var_l: np.ndarray, var_rl: np.ndarray) -> str:
    steps = [t for t in TABLE_STEPS if t < var_l.shape[1]] + [var_l.shape[1]]
    header = ["mu"] + [f"Var[l_t] t={t}" for t in steps] + [f"Var[r_t l_t] t={t}" for t in steps]
    rows = [
        [f"{mu:g}"] + [f"{var_l[i, t - 1]:.3e}" for t in steps] + [f"{var_rl[i, t - 1]:.3e}" for t in steps]
        for i, mu in enumerate(mus)
    ]
    return markdown_table(header, rows)


def plot_over_steps(mus: Sequence[float], var_l: np.ndarray, var_rl: np.ndarray, beta2: float):
    import matplotlib.pyplot as plt

    t = np.arange(1, var_l.shape[1] + 1)
    cols = min(3, len(mus))
    rows = -(-len(mus) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax, mu, vl, vrl in zip(axes.flat, mus, var_l, var_rl, strict=False):  # axes may outnumber mus
        ax.loglog(t, vl, label="Var[$l_t$] (Adam)")
        rectified = vrl > 0
        ax.loglog(t[rectified], vrl[rectified], label="Var[$r_t l_t$] (RAdam)")
        ax.set_title(f"g ~ N({mu:g}, 1), $\\beta_2$={beta2:g}")
        ax.set_xlabel("step t")
    for ax in list(axes.flat)[len(mus) :]:
        ax.axis("off")
    axes.flat[0].legend()
    fig.tight_layout()
    return fig


def plot_over_rho(var_l_mu0: np.ndarray | None, beta2: float):
    import matplotlib.pyplot as plt

    rho = np.geomspace(4.05, rho_inf(beta2), 400)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(rho, variance_adaptive_lr(rho), label="exact Var[l]($\\rho$)")
    ax.loglog(rho, variance_adaptive_lr_first_order(rho), "--", label="first order $\\rho/(2(\\rho-2)(\\rho-4))$")
    if var_l_mu0 is not None:
        t = np.arange(1, len(var_l_mu0) + 1)
        rho_steps = rho_t(t, beta2)
        keep = rho_steps > 4.5
        ax.loglog(rho_steps[keep], var_l_mu0[keep], ".", markersize=2, label="simulated Var[$l_t$] at $\\rho_t$ (mu=0)")
    ax.set_xlabel("$\\rho$ (degrees of freedom)")
    ax.set_ylabel("variance per unit $\\sigma^{-2}$")
    ax.legend()
    fig.tight_layout()
    return fig


def log_tensorboard(
    directory: Path, mus: Sequence[float], var_l: np.ndarray, var_rl: np.ndarray, figures: dict
) -> None:
    from torch.utils.tensorboard import SummaryWriter

    steps = var_l.shape[1]
    # every step up to 100, then about 300 log-spaced steps: the curves, without 12 x steps events
    logged = np.unique(
        np.concatenate([np.arange(1, min(steps, 100) + 1), np.geomspace(1, steps, 300).round().astype(int), [steps]])
    )
    with SummaryWriter(str(directory)) as writer:
        for i, mu in enumerate(mus):
            for t in logged:
                writer.add_scalar(f"var_l_t/mu={mu:g}", var_l[i, t - 1], global_step=int(t))
                writer.add_scalar(f"var_r_t_l_t/mu={mu:g}", var_rl[i, t - 1], global_step=int(t))
        for name, fig in figures.items():
            writer.add_figure(f"figures/{name}", fig, close=False)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the simulation; returns the arrays, the table and the written files (used by the tests)."""
    args = parse_args(argv)
    directory = output_dir(args.output_dir)
    var_l, var_rl = simulate(args.mus, args.trajectories, args.steps, args.beta2, args.seed, args.device)
    text = table(args.mus, var_l, var_rl)
    machine = machine_line()
    print(f"b2 = {args.beta2}, {args.trajectories} trajectories, {args.steps} steps, seed {args.seed}")
    print(machine)
    print(text)

    mu0 = [i for i, mu in enumerate(args.mus) if mu == 0.0]
    figures = {
        "variance_over_steps": plot_over_steps(args.mus, var_l, var_rl, args.beta2),
        "variance_over_rho": plot_over_rho(var_l[mu0[0]] if mu0 else None, args.beta2),
    }
    files = []
    for name, fig in figures.items():
        files.append(directory / f"{name}.png")
        fig.savefig(files[-1], dpi=120)
    log_tensorboard(directory, args.mus, var_l, var_rl, figures)
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)
    print("wrote", ", ".join(str(f) for f in files), "and TensorBoard events in", directory)
    return {
        "var_l": var_l,
        "var_rl": var_rl,
        "mus": list(args.mus),
        "table": text,
        "machine": machine,
        "files": files,
        "output_dir": directory,
    }


if __name__ == "__main__":
    main()
