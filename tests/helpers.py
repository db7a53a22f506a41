"""The tests' one set of helpers: option tables, one optimisation problem, one error measure, one model, one Trainer
factory and one TensorBoard reader. The test files are tables of cases around these (as optax's and optimi's are).

- Option tables: ``PATHS`` (the three implementations of the update), ``CASES`` / ``option_table()`` (RAdam's
  options and the parameter layouts that stress them), ``TOLERANCES`` (per dtype).
- Problem: ``make_params``, ``make_groups``, ``set_grads``, ``run``; ``state_tensors``, ``snapshot``, ``assert_same``,
  ``backward``.
- Error measure: ``relative_error``.
- Model: ``Model``; data: ``loader``, ``digits``, ``known_gradients``.
- Trainer: ``make_trainer``.
- TensorBoard: ``read_events`` and its views ``scalar_series`` and ``event_log``; assertions over what the monitors
  logged: ``assert_matches_math`` (RectificationMonitor), ``assert_histogram_equals_numpy`` (GradientHistogramMonitor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

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
from lightning_radam.rectification import r_t, rho_t, variance_adaptive_lr, variance_adaptive_lr_first_order

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

    def step_counts(self) -> list[float]:
        """The step count of every parameter that has a state, in order."""
        return [self.optimizer.state[p]["step"].item() for p in self.params if p in self.optimizer.state]


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


def snapshot(params: Any, optimizer: torch.optim.Optimizer) -> tuple:
    """Copies of the parameters, of every state tensor and of RAdam's rectification stats, for assert_same."""
    params = list(params)
    state = {
        i: {k: v.clone() for k, v in optimizer.state[p].items()} for i, p in enumerate(params) if p in optimizer.state
    }
    return [p.detach().clone() for p in params], state, optimizer.rectification_stats()


def assert_same(a: tuple, b: tuple) -> None:
    """Two snapshots are bitwise equal: parameters, state (step counts included) and rectification stats."""
    params_a, state_a, stats_a = a
    params_b, state_b, stats_b = b
    assert all(torch.equal(x, y) for x, y in zip(params_a, params_b, strict=True))
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[i][k], state_b[i][k]) for i in state_a for k in state_a[i])
    assert stats_a == stats_b


def backward(model: nn.Module, seed: int = 0, scaler: torch.amp.GradScaler | None = None, **autocast: Any) -> None:
    """Fresh gradients of mean(model(x)^2) for a batch of 5 inputs drawn with ``seed``, on the model's device.

    With ``scaler``, the loss is scaled first; ``autocast`` (``dtype=torch.float16``, say) runs the forward under
    ``torch.autocast`` on the model's device.
    """
    device = next(model.parameters()).device
    x = torch.randn(5, model.in_features, generator=torch.Generator().manual_seed(seed)).to(device)
    model.zero_grad()
    with torch.autocast(device.type, enabled=bool(autocast), **autocast):
        loss = model(x).float().pow(2).mean()
    (loss if scaler is None else scaler.scale(loss)).backward()


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


# -------------------------------------------------------------------------------------------------------- model


@lru_cache(maxsize=1)
def digits() -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y))


def loader(n: int = 256, batch_size: int = 32) -> DataLoader:
    """A fixed-order loader of a learnable task: 16 features, the class is the argmax of the first four."""
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(x, x[:, :4].argmax(1)), batch_size=batch_size, shuffle=False)


def known_gradients(finite_only: bool = False, max_log10: float = 38.0) -> dict[str, Tensor]:
    """Magnitudes over float32's whole range (subnormals included), bucket edges, zeros, both signs."""
    rng = np.random.default_rng(0)
    w = 10.0 ** rng.uniform(-44.0, max_log10, 3000) * rng.choice([-1.0, 1.0], 3000)
    edges = [0.5, 1.25, -1.5, 1.75, 2.0, 2.0**-126, 2.0**-149, 3 * 2.0**-140, 1.0 - 2.0**-24, 10.0**max_log10]
    w = np.concatenate([w, edges, np.zeros(40)])
    b = np.concatenate([rng.normal(0.0, 1e-3, 200), np.zeros(7), [] if finite_only else [np.inf, -np.inf, np.nan]])
    return {"w": torch.tensor(w, dtype=torch.float64), "b": torch.tensor(b, dtype=torch.float64)}


def binned_values(tensor: Tensor) -> np.ndarray:
    """The values the histogram monitor bins: float32 and bfloat16 as they are, other dtypes through float32."""
    return tensor.float().double().cpu().numpy()


class Model(RAdamMixin, L.LightningModule):
    """The tests' one LightningModule. Its network, data and default optimizer come in three kinds, one per purpose:

    - ``net="digits"`` (default): ``hidden`` = Linear(64, 32), ReLU, ``out`` = Linear(32, 10), classifying sklearn's
      digits (shuffled by a seeded generator). A real task with named layers, for the monitors. Default optimizer:
      RAdam(lr=1e-2, betas=(0.9, 0.98)), one parameter group.
    - ``net="norms"``: ``net`` = Linear(16, 32), LayerNorm, ReLU, BatchNorm1d, bias-free Linear(32, 4), on
      ``loader()`` (fixed order, so a run resumed mid-epoch can be compared bitwise). Every kind of parameter that
      RAdamMixin keeps out of weight decay. Default optimizer: RAdamMixin's, built from the keyword ``hparams``
      (lr, betas, weight_decay, lr_schedule, ...), which are saved as the module's hyperparameters.
    - ``gradients={name: g}``: one zero parameter per name (in ``dtype``) and the loss sum(p * g), so that every
      gradient is exactly ``g`` at every step: for exact histogram counts. Default optimizer: SGD(lr=0), the
      parameters never move. Data: 16 dummy batches (``batches`` to change). With ``decades_per_step=d`` the
      gradients of optimizer step ``s`` are ``g * 10**(-d * s)``: a distribution of log10|g| that moves down by
      ``d`` decades a step, as Adam's does in its early distortion.

    Args:
        make_optimizer: ``parameters -> optimizer``, replacing the kind's default optimizer.
        batch_size: of the digits loader (default: 32).
        inf_at_step: the loss is multiplied by inf at this optimizer step (the GradScaler then skips it).
        seed: if given, the parameters are initialised from ``torch.manual_seed(seed)`` (the global RNG is restored).
    """

    def __init__(
        self,
        make_optimizer: Callable | None = None,
        *,
        net: str = "digits",
        gradients: dict | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
        inf_at_step: int | None = None,
        seed: int | None = None,
        decades_per_step: float = 0.0,
        batches: int = 16,
        **hparams: Any,
    ) -> None:
        super().__init__()
        if hparams:
            self.save_hyperparameters(hparams)
        self.kind = "gradients" if gradients is not None else net
        self.make_optimizer = make_optimizer
        self.batch_size = batch_size
        self.inf_at_step = inf_at_step
        self.decades_per_step, self.batches = decades_per_step, batches
        self.gradient_names = list(gradients or {})
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            if self.kind == "digits":
                self.in_features = 64
                self.hidden = nn.Linear(64, 32)
                self.out = nn.Linear(32, 10)
            elif self.kind == "norms":
                self.in_features = 16
                self.net = nn.Sequential(
                    nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.BatchNorm1d(32), nn.Linear(32, 4, bias=False)
                )
            elif self.kind == "gradients":
                for name, g in gradients.items():  # buffers: they move to the Trainer's device with the parameters
                    self.register_buffer(f"{name}_gradient", g.to(dtype), persistent=False)
                    self.register_parameter(name, nn.Parameter(torch.zeros_like(g, dtype=dtype)))
            else:
                raise ValueError(f"Invalid net: {net!r}")

    @property
    def gradients(self) -> dict[str, Tensor]:
        """With ``gradients=``: the gradient of each parameter, by name, in the parameters' dtype and device."""
        return {name: getattr(self, f"{name}_gradient") for name in self.gradient_names}

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "digits":
            return self.out(torch.relu(self.hidden(x)))
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self.kind == "gradients":
            scale = 10.0 ** (-self.decades_per_step * self.trainer.fit_loop.epoch_loop._batches_that_stepped)
            return sum((getattr(self, name) * g).sum() for name, g in self.gradients.items()) * scale
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        if self.trainer.fit_loop.epoch_loop._batches_that_stepped == self.inf_at_step:
            loss = loss * float("inf")  # non-finite gradients: the GradScaler skips this step
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        if self.make_optimizer is not None:
            return self.make_optimizer(self.parameters())
        if self.kind == "digits":
            return RAdam(self.parameters(), lr=1e-2, betas=(0.9, 0.98))
        if self.kind == "gradients":
            return torch.optim.SGD(self.parameters(), lr=0.0)
        return super().configure_optimizers()  # RAdamMixin: RAdam from the hparams, no decay for biases and norms

    def train_dataloader(self) -> DataLoader:
        if self.kind == "gradients":
            return DataLoader(torch.zeros(self.batches, 1), batch_size=1)
        if self.kind == "norms":
            return loader()
        generator = torch.Generator().manual_seed(0)
        return DataLoader(digits(), batch_size=self.batch_size, shuffle=True, generator=generator)


BETA2S = (0.98, 0.999)  # one per parameter group of two_groups


def two_groups(make: Callable) -> Callable:
    """A ``make_optimizer`` for Model(): ``make`` gets two groups, the first two parameters and the others, with
    beta2 = BETA2S[0] and BETA2S[1] (for the digits network: the hidden layer and the output layer)."""

    def build(params: Any) -> torch.optim.Optimizer:
        params = list(params)
        return make(
            [{"params": params[:2], "betas": (0.9, BETA2S[0])}, {"params": params[2:], "betas": (0.9, BETA2S[1])}]
        )

    return build


# ------------------------------------------------------------------------------------------------------ trainer


def make_trainer(
    tmp_path: Path, callbacks: Any = (), max_steps: int = 6, logger: Any = "tensorboard", **kwargs: Any
) -> L.Trainer:
    """The one Trainer factory: CPU, one device, logging every step, no checkpointing, progress bar or summary.

    ``logger="tensorboard"`` is a TensorBoardLogger writing to ``tmp_path/version_0``; pass ``False`` for none, or
    any logger(s). ``kwargs`` override every other Trainer argument (``accelerator="cuda"``, say).
    """
    if isinstance(logger, str) and logger == "tensorboard":
        logger = TensorBoardLogger(tmp_path, name="", version=0)
    options = {
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "devices": 1,
        "max_steps": max_steps,
        "logger": logger,
        "callbacks": list(callbacks),
        "log_every_n_steps": 1,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**options, **kwargs})


# -------------------------------------------------------------------------------------------------- tensorboard


def read_events(path: Any) -> event_accumulator.EventAccumulator:
    """Every event (no sampling) of a TensorBoard run directory or event file."""
    guidance = {event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0, event_accumulator.TENSORS: 0}
    guidance[event_accumulator.IMAGES] = 0  # every image too (by default the accumulator keeps 4 per tag)
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance=guidance)
    accumulator.Reload()
    return accumulator


def scalar_series(events: event_accumulator.EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    """The steps and float64 values of one scalar tag."""
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points], dtype=np.float64)


def event_log(path: Any) -> dict[str, dict[str, list]]:
    """Every scalar as (step, value) and every histogram as (step, bucket counts), by tag, for equality checks."""
    events = read_events(path)
    tags = events.Tags()
    return {
        "scalars": {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]},
        "histograms": {
            tag: [(e.step, list(e.histogram_value.bucket)) for e in events.Histograms(tag)]
            for tag in tags["histograms"]
        },
    }


def assert_matches_math(events: Any, key: str, beta2: float, threshold: float, steps: list[int]) -> None:
    """Every point RectificationMonitor logged under ``radam/{key}/`` equals the float64 maths at t = step + 1."""
    logged, t = scalar_series(events, f"radam/{key}/step")
    assert logged == steps
    np.testing.assert_array_equal(t, np.array(steps) + 1)
    expected_rho = np.array([rho_t(int(s), beta2) for s in t])
    for name, expected in [
        ("rho_t", expected_rho),
        ("r_t", np.array([r_t(int(s), beta2) for s in t])),
        ("rectified", (expected_rho > threshold).astype(np.float64)),
        ("skipped", np.zeros(len(steps))),
    ]:
        logged, values = scalar_series(events, f"radam/{key}/{name}")
        assert logged == steps, name
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0, err_msg=name)
    defined = [s for s, rho in zip(steps, expected_rho, strict=True) if rho > 4.0]
    rho_defined = expected_rho[expected_rho > 4.0]
    for name, expected in [
        ("var_adaptive_lr", variance_adaptive_lr(rho_defined)),
        ("var_adaptive_lr_first_order", variance_adaptive_lr_first_order(rho_defined)),
        ("var_rectified_lr", np.array([r_t(s + 1, beta2) ** 2 for s in defined]) * variance_adaptive_lr(rho_defined)),
    ]:
        logged, values = scalar_series(events, f"radam/{key}/{name}")
        assert logged == defined, name
        np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0, err_msg=name)


def assert_histogram_equals_numpy(events: Any, tag: str, values: np.ndarray, steps: list[int]) -> None:
    """Every histogram logged under ``tag`` holds numpy's counts of log10|values| over its own bucket limits."""
    histograms = events.Histograms(tag)
    assert [h.step for h in histograms] == steps
    magnitudes = np.abs(values[(values != 0) & np.isfinite(values)])
    for h in histograms:
        value = h.histogram_value
        edges = np.array([value.min, *value.bucket_limit])
        expected, _ = np.histogram(np.log10(magnitudes), bins=edges)
        np.testing.assert_array_equal(np.array(value.bucket), expected)
        assert value.num == magnitudes.size
        assert value.num == sum(value.bucket)
