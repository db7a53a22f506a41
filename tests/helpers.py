"""Helpers shared by the tests: the option table of RAdam and the problem it is run on, one error measure; small
real models, Trainers and TensorBoard readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from sklearn.datasets import load_digits
from tensorboard.backend.event_processing import event_accumulator
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_radam import RAdam, RAdamMixin


# ----------------------------------------------------------------------------------------------- option tables

#: The three implementations of the update, as RAdam keyword arguments.
PATHS = [
    pytest.param({"foreach": False, "fused": False}, id="for_loop"),
    pytest.param({"foreach": True}, id="foreach"),
    pytest.param({"fused": True}, id="fused"),
]

#: Largest relative_error allowed between two implementations of the same update, per dtype.
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5}

SHAPES = [(30, 20), (7,), (5, 5)]  # the parameters every case has
FROZEN_INDEX = 1  # with Case.frozen, this parameter gets no gradient at the steps below, then resumes
FROZEN_STEPS = frozenset(range(2, 8)) | frozenset(range(40, 120))  # 0-based: in the unrectified phase, and later
STEPS = 12  # the unrectified steps (1-5 at threshold 5, 1-4 at threshold 4) and seven rectified ones


@dataclass(frozen=True)
class Case:
    """One row of the option table: RAdam keyword arguments and the parameter layout that goes with them."""

    name: str
    kwargs: dict = field(default_factory=dict)
    groups: bool = False  # three parameter groups with their own lr, betas and weight decay
    frozen: bool = False  # parameter FROZEN_INDEX gets no gradient at FROZEN_STEPS (its own step count lags behind)
    no_grad: bool = False  # an extra parameter that never gets a gradient (it never gets a state)
    empty: bool = False  # an extra parameter with no elements
    complex: bool = False  # an extra complex128 parameter (no fused kernel: the default path falls back)
    non_contiguous: bool = False  # parameter 0 is a transposed leaf; its gradient is row-major

    @property
    def torch_comparable(self) -> bool:
        """torch.optim.RAdam takes these kwargs (it has no threshold; degenerated_to_sgd is always True there)."""
        return not {"threshold", "degenerated_to_sgd"} & self.kwargs.keys()


CASES = [
    Case("defaults"),
    Case("l2_weight_decay", {"weight_decay": 0.1}),
    Case("decoupled_weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    Case("maximize", {"maximize": True}),
    Case("tensor_lr", {"lr": torch.tensor(5e-3)}),
    Case("groups", groups=True),
    Case("frozen_then_resumed", frozen=True),
    Case("never_a_grad", no_grad=True),
    Case("empty_param", empty=True),
    Case("complex_param", {"weight_decay": 0.05}, complex=True),
    Case("non_contiguous_param", non_contiguous=True),
    Case("threshold_4", {"threshold": 4.0}),
    Case("degenerated_to_sgd", {"degenerated_to_sgd": True}),
    Case(
        "sgd_decoupled_weight_decay", {"degenerated_to_sgd": True, "weight_decay": 0.1, "decoupled_weight_decay": True}
    ),
    Case("sgd_threshold_4_maximize", {"degenerated_to_sgd": True, "threshold": 4.0, "maximize": True}),
]
CASE = {case.name: case for case in CASES}


def option_table(keep: Callable[[Case], bool] = lambda case: True, paths: bool = False) -> list:
    """The rows of CASES that ``keep`` accepts, as pytest parameters named after the case.

    With ``paths``, one row ``(case, path)`` per case and path of PATHS that can run it (the fused kernel takes no
    complex parameters).
    """
    if not paths:
        return [pytest.param(case, id=case.name) for case in CASES if keep(case)]
    return [
        pytest.param(case, path.values[0], id=f"{case.name}-{path.id}")
        for case in CASES
        if keep(case)
        for path in PATHS
        if not (case.complex and path.values[0].get("fused"))
    ]


# ------------------------------------------------------------------------------------------------------ problem


def _wide(tensor: Tensor) -> Tensor:
    """``tensor`` on the CPU in float64 (complex128 if complex), for exact differences."""
    return tensor.detach().cpu().to(torch.complex128 if tensor.is_complex() else torch.float64)


def make_params(case: Case, dtype: torch.dtype = torch.float64, device: str = "cpu", scale: float = 1.0) -> list:
    """The parameters of ``case``: SHAPES, then the extra ones the case asks for (the same values on every device)."""
    generator = torch.Generator().manual_seed(0)
    tensors = [scale * torch.randn(shape, generator=generator, dtype=torch.float64) for shape in SHAPES]
    if case.non_contiguous:
        tensors[0] = tensors[0].t()  # .to() below keeps the strides of a dense tensor
    if case.no_grad:
        tensors.append(torch.randn(4, generator=generator, dtype=torch.float64))
    if case.empty:
        tensors.append(torch.empty(0, dtype=torch.float64))
    if case.complex:
        tensors.append(torch.randn(4, 3, generator=generator, dtype=torch.complex128))
    return [nn.Parameter(t.to(device=device, dtype=t.dtype if t.is_complex() else dtype)) for t in tensors]


def make_groups(params: list, case: Case) -> list:
    """``params`` split into the parameter groups of ``case`` (one group unless ``case.groups``)."""
    if not case.groups:
        return params
    return [
        {"params": params[:1], "lr": 3e-3, "betas": (0.8, 0.99)},
        {"params": params[1:2], "betas": (0.95, 0.9)},
        {"params": params[2:], "lr": 2e-2, "weight_decay": 0.05},
    ]


def set_grads(params: list, t: int, case: Case) -> None:
    """Gradients of step ``t`` (0-based): cos(theta) plus noise drawn from a generator seeded with t.

    They depend only on ``t`` and on the parameters (so a resumed run replays them); they are computed on the CPU in
    float64 and then cast, so every device and dtype receives the same numbers for the same parameters.
    """
    generator = torch.Generator().manual_seed(1000 + t)
    for i, p in enumerate(params):
        noise = torch.randn(p.shape, generator=generator, dtype=_wide(p).dtype)
        withheld = (case.frozen and i == FROZEN_INDEX and t in FROZEN_STEPS) or (case.no_grad and i == len(SHAPES))
        grad = torch.cos(_wide(p)) + 0.1 * noise
        p.grad = None if withheld else grad.contiguous().to(device=p.device, dtype=p.dtype)


@dataclass
class Run:
    params: list
    initial: list
    optimizer: torch.optim.Optimizer

    def updates(self) -> list:
        """theta_T - theta_0 per parameter, exactly, in float64 (complex128) on the CPU."""
        return [_wide(p) - _wide(p0) for p, p0 in zip(self.params, self.initial, strict=True)]


def run(
    optimizer_cls: type,
    case: Case,
    steps: int = STEPS,
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    scale: float = 1.0,
    **kwargs: Any,
) -> Run:
    """``steps`` steps of ``optimizer_cls`` (RAdam or torch.optim.RAdam) on the problem of ``case``.

    The optimizer gets lr=1e-2, then ``case.kwargs``, then ``kwargs`` (the path, say), each overriding the last.
    """
    params = make_params(case, dtype, device, scale)
    initial = [p.detach().clone() for p in params]
    optimizer = optimizer_cls(make_groups(params, case), **{"lr": 1e-2, **case.kwargs, **kwargs})
    for t in range(steps):
        set_grads(params, t, case)
        optimizer.step()
    return Run(params, initial, optimizer)


def state_tensors(optimizer: torch.optim.Optimizer, params: list) -> list:
    """The moments of ``params`` that have a state, in order."""
    return [optimizer.state[p][key] for p in params if p in optimizer.state for key in ("exp_avg", "exp_avg_sq")]


# ------------------------------------------------------------------------------------------------ error measure


def relative_error(actual: list, expected: list) -> float:
    """The one error measure: the worst, over pairs of tensors, of the normwise error ||a - e|| / ||e|| (2-norm).

    Per tensor, so that the error of a small tensor cannot hide behind a large one (the worst tensor's error is at
    least the error of all of them together); normwise, so that in float32 the rounding of theta to its own
    precision in one element does not drown the comparison of two updates. Computed in float64 on the CPU; empty
    tensors are skipped, and a zero ``e`` counts only if ``a`` differs from it.
    """
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = _wide(a), _wide(e)
        if e.numel():
            worst = max(worst, (torch.linalg.vector_norm(a - e) / torch.linalg.vector_norm(e).clamp_min(1e-300)).item())
    return worst


# ------------------------------------------------------------------------------------ models, Trainers, events


@lru_cache(maxsize=1)
def digits() -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))


class DigitsModel(L.LightningModule):
    """A two-layer classifier of sklearn's digits, with its optimizer chosen by the test."""

    def __init__(
        self, make_optimizer: Optional[Callable] = None, batch_size: int = 32, inf_at_step: Optional[int] = None
    ) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(64, 32)
        self.out = torch.nn.Linear(32, 10)
        self.make_optimizer = make_optimizer or (lambda params: RAdam(params, lr=1e-2, betas=(0.9, 0.98)))
        self.batch_size = batch_size
        self.inf_at_step = inf_at_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        if self.trainer.fit_loop.epoch_loop._batches_that_stepped == self.inf_at_step:
            loss = loss * float("inf")  # non-finite gradients: the GradScaler skips this step
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        return DataLoader(digits(), batch_size=self.batch_size, shuffle=True, generator=generator)


def make_trainer(
    tmp_path: Path, callbacks: list, max_steps: int = 6, logger: Any = "tensorboard", **kwargs: Any
) -> L.Trainer:
    if logger == "tensorboard":
        logger = TensorBoardLogger(tmp_path, name="", version=0)
    options = dict(
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1
    )
    options.update(kwargs)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks, **options)


def read_events(log_dir: str) -> event_accumulator.EventAccumulator:
    guidance = {event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0}
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def scalar_series(events: event_accumulator.EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points], dtype=np.float64)


def event_log(path: Path) -> dict[str, dict[str, list]]:
    """Every scalar as (step, value) and every histogram as (step, bucket counts), by tag, for equality checks."""
    events = read_events(str(path))
    tags = events.Tags()
    return {
        "scalars": {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]},
        "histograms": {
            tag: [(e.step, list(e.histogram_value.bucket)) for e in events.Histograms(tag)]
            for tag in tags["histograms"]
        },
    }


class Classifier(RAdamMixin, L.LightningModule):
    """16 features -> 4 classes through Linear, LayerNorm, BatchNorm and a bias-free head; RAdam from hparams."""

    def __init__(self, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 4, bias=False)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss


def loader(n=256, batch_size=32):
    """A fixed-order loader of a learnable task: the class is the argmax of the first four features."""
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x[:, :4].argmax(1)), batch_size=batch_size, shuffle=False)


def trainer(tmp_path, **kwargs):
    """A CPU Trainer without logger, progress bar, summary or checkpointing unless asked for."""
    defaults = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return L.Trainer(**{**defaults, **kwargs})
