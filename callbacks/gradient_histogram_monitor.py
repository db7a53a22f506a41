r"""Histograms of :math:`\log_{10}|g|` per optimizer step: the paper's gradient-distribution figure in TensorBoard.

The top bits of an IEEE float already are a logarithmic bucket: for a float32 ``g``,
``(g.view(int32) >> 21) & 0x3FF`` is its 8 exponent bits and 2 leading mantissa bits (the sign
dropped), so counting these integers gives exact counts over fixed buckets of a quarter of the mantissa
range per octave, ``[2^e (1 + j/4), 2^e (1 + (j+1)/4))``, on the gradients' device: float32 and bfloat16 CPU
tensors in one pass in C (``_bucket_count.c``, where it was built), anything else with torch's operations. Only the
1024 counts per histogram cross to the host, and they are written with TensorBoard's raw-histogram API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary  # type: ignore[import-untyped]
from torch import Tensor
from typing_extensions import override

from lightning_radam._checks import check_choice, check_int, check_positive
from lightning_radam._compat import optimizer_handles_unscaling, summary_file_writer
from lightning_radam._distributed import is_dtensor, local_tensor

from ._common import (
    EARLY_STEPS,
    _callbacks,
    _check_prefix,
    _compile_pattern,
    _layers_match,
    _log_scalars,
    _logged_step,
    _optimizer_prefix,
    _StepMonitor,
    _tag_prefix,
    _tensorboard_loggers,
)
from ._distributed import sum_histograms_across_shards
from .distortion import (
    DEFAULT_EARLY_STEPS,
    DEFAULT_QUANTILES,
    DEFAULT_THRESHOLD,
    QUANTILE_NAMES,
    DistortionAlarm,
    _quantiles,
    occupied_span,
)
from .stacked_histogram import encode_png, image_summary, render_stacked_histogram

try:  # the count in C (setup.py builds it where a C compiler is found); else through torch, the same counts
    from . import _bucket_count  # type: ignore[attr-defined]
except ImportError:
    _bucket_count = None

__all__ = ["DistortionWarning", "GradientHistogramMonitor", "log2_bucket_counts", "bucket_edges", "counts_in_c"]

#: Points per tag that TensorBoard's Histograms dashboard draws (its histograms plugin samples this many).
HISTOGRAMS_DASHBOARD_POINTS = 51
NUM_BUCKETS = 1024  # 8 exponent bits x 2 leading mantissa bits; bucket k = 4 * exponent + j
_FIRST_NONFINITE = 4 * 255  # exponent 255: inf and NaN
_WHEN = ("before_clip", "after_clip")
_ON_DISTORTION = ("warn", "stop", "ignore")

#: Steps kept on the host for the stacked picture (8 KiB each) before later ones are thinned out.
MAX_PICTURE_STEPS = 1024
# The largest subsample. The counts are estimated as count * subsample in int64 (NumPy wraps around silently), where
# count <= numel / subsample + (number of tensors), and torch sizes the slice [offset::subsample] as
# (numel - offset + subsample - 1) // subsample in int64: both stay below 2^63 for any model that fits in memory
# (fewer than 2^30 tensors, 2^62 elements). A subsample beyond a tensor's size reads 1 element of it per step anyway.
MAX_SUBSAMPLE = 2**32
_CPU_PIECE = 2**18  # elements binned at a time on the CPU: their int32 bucket indices (1 MiB) stay in cache
# Gradients smaller than this are copied into one tensor and binned together: binning a tensor costs a few
# microseconds of calls whatever its size, which the copy of a small one undercuts.
_BATCH_BELOW = 2**14
# The masks and shifts as 0-dim tensors (CPU scalars, whatever torch.set_default_device says: fine with any device),
# as a Python int operand is wrapped in a new tensor on every call (~1 us each). The mask clears the sign bit; the
# shift leaves the bucket's 10 bits.
with torch.device("cpu"):
    _MAGNITUDE = {
        torch.int32: (torch.tensor(0x7FFFFFFF, dtype=torch.int32), torch.tensor(21, dtype=torch.int32)),  # float32
        torch.int16: (torch.tensor(0x7FFF, dtype=torch.int16), torch.tensor(5, dtype=torch.int16)),  # bfloat16
    }
    _ONE = torch.tensor(1, dtype=torch.int8)  # float64's sign bit shifted out
# The dtypes the C count reads from their own bits, with their widths in bytes (others are converted to float32 first)
_C_WIDTH = {torch.float32: 4, torch.bfloat16: 2}
# Below this many elements, counting the non-zero elements costs less than reading the count of bucket 0 first
_COUNT_ZEROS_BELOW = 4096


def log2_bucket_counts(tensor: Tensor) -> Tensor:
    r"""Counts of ``|tensor|`` in the 1024 IEEE buckets (see :func:`bucket_edges`), on the tensor's device.

    Bucket ``k = 4 e + j`` holds the float32 values with biased exponent ``e`` and leading mantissa
    bits ``j``: ``[2^{e-127} (1 + j/4), 2^{e-127} (1 + (j+1)/4))`` for ``1 <= e <= 254``; buckets 0-3
    hold zero and the subnormals, 1020-1023 the infinities and NaNs. float32 and bfloat16 are binned
    from their own bits (bfloat16 is the upper half of float32, so the buckets are the same); other
    dtypes are converted to float32 first (finite float64 values beyond float32's range saturate
    into the largest finite bucket; they are not counted as inf). float32 and bfloat16 CPU tensors
    (plain tensors and Parameters) are counted in C in one pass over their memory where the extension
    was built (:func:`counts_in_c`; a tensor that cannot be flattened as a view is copied first).
    Otherwise, on the CPU, a tensor of more than ``2**18`` elements is binned in pieces of that size,
    so that its bucket indices stay in cache and the temporary memory stays at 1 MiB.

    Args:
        tensor: a floating-point tensor of any shape.

    Returns:
        An int64 tensor of shape ``(1024,)`` on ``tensor.device``. Nothing is synchronised (off the CPU
        the counts are accumulated with ``index_add_``, as ``torch.bincount`` synchronises on CUDA).

    Example:
        >>> log2_bucket_counts(torch.tensor([1.0, 1.3, -1.6, 0.0]))[[0, 508, 509, 510]].tolist()
        [1, 1, 1, 1]
    """
    return _bin(tensor)


def counts_in_c() -> bool:
    """Whether float32 and bfloat16 CPU tensors are counted in C, in one pass over their memory.

    The C extension (``lightning_radam.callbacks._bucket_count``) is built when the package is installed from source
    with a C compiler at hand. Without it, :func:`log2_bucket_counts` counts through torch's operations: the same
    counts, in about twice the time on the CPU. Other dtypes and devices, tensor subclasses (but Parameter) and tensors
    without memory of their own are always counted through torch.

    Returns:
        True if the extension is loaded.

    Example:
        >>> isinstance(counts_in_c(), bool)
        True
    """
    return _bucket_count is not None


def _bin(tensor: Tensor, nonzero: list[Tensor] | None = None) -> Tensor:
    """:func:`log2_bucket_counts` of ``tensor``; with a list ``nonzero``, also the numbers of non-zero elements of its
    pieces (0-d int64 tensors), appended to it: counted from the same bits while a piece is in cache (in C, one piece:
    the whole tensor)."""
    flat = tensor if tensor.dim() == 1 else tensor.reshape(-1)
    in_c = _in_c(flat)
    if in_c is not None:
        counts = torch.zeros(NUM_BUCKETS, dtype=torch.int64, device="cpu")  # whatever torch.set_default_device says
        zeros = _bucket_count.count(*in_c, counts.data_ptr())
        if nonzero is not None:
            nonzero.append(torch.scalar_tensor(flat.numel() - zeros, dtype=torch.int64, device="cpu"))
        return counts
    piece_size = _CPU_PIECE if flat.is_cpu else max(flat.numel(), 1)
    total: Tensor | None = None
    for start in range(0, max(flat.numel(), 1), piece_size):
        piece = flat[start : start + piece_size]
        magnitude = _magnitude_bits(piece)
        piece_counts = _count_ids(torch.bitwise_right_shift(magnitude, _MAGNITUDE[magnitude.dtype][1]))
        total = piece_counts if total is None else total.add_(piece_counts)
        if nonzero is not None:
            nonzero.append(_count_nonzero(piece, magnitude, piece_counts))
    assert total is not None  # noqa: S101 (the loop runs at least once)
    return total


def _in_c(flat: Tensor) -> tuple[int, int, int, int] | None:
    """``(address, numel, stride, width)`` of a 1-D tensor for the C count, or None where torch counts it: without the
    extension, other dtypes and devices, tensor subclasses, tensors without memory of their own (ZeroTensor
    gradients, torch.func's wrappers) and elements not aligned to their width."""
    width = _C_WIDTH.get(flat.dtype)
    if _bucket_count is None or width is None or not flat.is_cpu or type(flat) not in (Tensor, torch.nn.Parameter):
        return None
    if not torch._C._has_storage(flat) or torch._is_zerotensor(flat):
        return None
    address = flat.data_ptr()
    if address % width or (address == 0 and flat.numel() > 0):
        return None
    return address, flat.numel(), flat.stride(0), width


def _magnitude_bits(flat: Tensor) -> Tensor:
    """The bits of ``|x|`` of each element of a 1-D floating-point tensor, as a float32's (int32; bfloat16: its own,
    int16): the sign bit cleared, so that bits 21-30 (5-14) are the bucket."""
    if flat.dtype == torch.float64:  # finite values beyond float32's range saturate: they are not inf
        limit = torch.finfo(torch.float32).max
        flat = torch.where(torch.isfinite(flat), flat.clamp(-limit, limit), flat)
    if flat.dtype not in (torch.float32, torch.bfloat16):
        flat = flat.float()
    elif flat.is_neg():  # a negated view (torch._neg_view) has no bits of its own to view
        flat = flat.resolve_neg()
    bits = flat.view(torch.int16 if flat.dtype == torch.bfloat16 else torch.int32)
    return torch.bitwise_and(bits, _MAGNITUDE[bits.dtype][0])


def _count_ids(ids: Tensor, sync_free: bool | None = None) -> Tensor:
    # torch.bincount is the fastest count on the CPU (a serial loop, after a min() and a max() pass), but on CUDA it
    # reads min() and max() back to the host (two synchronisations per call); index_add_ of ones counts on the device
    # without synchronising.
    if sync_free is None:
        sync_free = not ids.is_cpu
    if not sync_free:
        return torch.bincount(ids, minlength=NUM_BUCKETS)
    ones = torch.ones((), dtype=torch.int64, device=ids.device).expand(ids.numel())
    return torch.zeros(NUM_BUCKETS, dtype=torch.int64, device=ids.device).index_add_(0, ids.int(), ones)


def bucket_edges() -> tuple[np.ndarray, np.ndarray]:
    r"""Lower and upper edges of the 1024 buckets of :func:`log2_bucket_counts`, as float64 magnitudes.

    Bucket 0's lower edge is the smallest positive subnormal, ``2^{-149}`` (zeros are counted apart);
    the edges of buckets 1020-1023 (inf, NaN) are ``inf``.

    Example:
        >>> lower, upper = bucket_edges()
        >>> float(lower[508]), float(upper[508])
        (1.0, 1.25)
    """
    k = np.arange(NUM_BUCKETS)
    exponent, j = k >> 2, (k & 3).astype(np.float64)
    normal = exponent > 0
    scale = np.where(normal, np.exp2(exponent - 127.0), 2.0**-126)
    lower = scale * np.where(normal, 1.0 + j / 4.0, j / 4.0)
    upper = scale * np.where(normal, 1.0 + (j + 1.0) / 4.0, (j + 1.0) / 4.0)
    lower[0] = 2.0**-149
    lower[_FIRST_NONFINITE:] = upper[_FIRST_NONFINITE:] = np.inf
    return lower, upper


_LOG10_LOWER, _LOG10_UPPER = (np.log10(edges) for edges in bucket_edges())
_FINITE_LOWER, _FINITE_UPPER = _LOG10_LOWER[:_FIRST_NONFINITE], _LOG10_UPPER[:_FIRST_NONFINITE]  # the finite buckets
_QUANTILES = np.asarray(DEFAULT_QUANTILES)
_LOG10_MIDDLE = (_LOG10_LOWER + _LOG10_UPPER) / 2.0


def _unscaled(counts: np.ndarray, log10_scale: float) -> np.ndarray:
    """Counts of scaled gradients moved down by the scale, to the nearest whole bucket (exact for powers of two,
    as GradScaler's scales are: a factor 2 is 4 buckets)."""
    shift = round(4 * log10_scale / math.log10(2.0))
    if shift == 0:
        return counts
    moved = np.zeros_like(counts)
    if shift > 0:
        moved[: len(counts) - shift] = counts[shift:]
        moved[0] += counts[:shift].sum()  # below the smallest bucket: kept in it
    else:
        moved[-shift:] = counts[: len(counts) + shift]
    return moved


def _sum(tensors: list[Tensor]) -> Tensor:
    """The sum of tensors of one shape, on the device of the first (parameters may live on several devices)."""
    return tensors[0] if len(tensors) == 1 else _stack(tensors).sum(0)


def _stack(tensors: list[Tensor]) -> Tensor:
    """``torch.stack`` on the device of the first tensor (one call fewer for one tensor)."""
    device = tensors[0].device
    return tensors[0][None] if len(tensors) == 1 else torch.stack([t.to(device) for t in tensors])


def _count_nonzero(piece: Tensor, magnitude: Tensor, counts: Tensor) -> Tensor:
    """The non-zero elements of ``piece``, from :func:`_magnitude_bits` (``magnitude``) and its bucket ``counts``."""
    # Exact zeros all fall in bucket 0 (with the subnormals below 0.25 * 2^-126 = 2^-128). On the CPU that count is
    # read for free, and when it is 0 the pass of count_nonzero is skipped (for pieces large enough that the pass
    # costs more than the read); elsewhere reading it would synchronise with the device, so the count is always
    # computed there.
    if piece.is_cpu and piece.numel() >= _COUNT_ZEROS_BELOW and counts.numpy()[0] == 0:
        return torch.scalar_tensor(piece.numel(), dtype=torch.int64, device=piece.device)
    if piece.dtype == torch.float64:  # float32 bits lose the values below its range: counted on float64's own bits
        magnitude = torch.bitwise_left_shift(piece.view(torch.int64), _ONE)  # the sign shifted out
    # over integers: on the CPU a twentieth of the time of a count over floats
    return torch.count_nonzero(magnitude)


@dataclass
class _Pending:
    """Device-side results of one optimizer step, waiting for ``on_train_batch_end``."""

    prefix: str
    tags: list[str] = field(default_factory=list)  # global first, then one per layer
    counts: list[Tensor] = field(default_factory=list)  # bucket counts, one row per tag
    nonzero: list[Tensor] = field(default_factory=list)  # number of non-zero elements, one per tag
    numel: list[int] = field(default_factory=list)
    log10_scale: float = 0.0


class DistortionWarning(UserWarning):
    """The warning of :class:`GradientHistogramMonitor`'s distortion alarm (filtered like any other warning)."""


class _History:
    """The global histograms of the logged steps, kept on the host for the stacked picture.

    Bounded: beyond ``MAX_PICTURE_STEPS`` steps every other step after the early phase is dropped (of all steps, if
    the early phase alone is longer), so a long run keeps an evenly thinned record. Saved in the callback's
    checkpointed state as int64 tensors (cropped to the occupied buckets), so that the picture drawn at the end of a
    resumed fit starts at step 0.
    """

    def __init__(self, steps: list[int] | None = None, rows: list[np.ndarray] | None = None) -> None:
        self.steps: list[int] = steps or []
        self.rows: list[np.ndarray] = rows or []

    def add(self, step: int, row: np.ndarray, early_steps: int) -> None:
        self.steps.append(step)
        self.rows.append(row)
        if len(self.steps) > MAX_PICTURE_STEPS:
            late = [i for i, s in enumerate(self.steps) if s >= early_steps]
            candidates = late if len(late) > 2 else range(len(self.steps))  # an early phase longer than the bound
            drop = set(candidates[1:-1:2])  # every other (later) step, the first and the last kept
            self.steps = [s for i, s in enumerate(self.steps) if i not in drop]
            self.rows = [r for i, r in enumerate(self.rows) if i not in drop]

    def state_dict(self) -> dict[str, Any]:
        counts = np.stack(self.rows) if self.rows else np.zeros((0, _FIRST_NONFINITE), dtype=np.int64)
        span = occupied_span(counts.sum(0))
        return {"steps": list(self.steps), "offset": span.start, "counts": torch.from_numpy(counts[:, span].copy())}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _History:
        cropped = np.asarray(state["counts"], dtype=np.int64)
        rows = np.zeros((len(state["steps"]), _FIRST_NONFINITE), dtype=np.int64)
        rows[:, state["offset"] : state["offset"] + cropped.shape[1]] = cropped
        return cls([int(s) for s in state["steps"]], list(rows))


class GradientHistogramMonitor(_StepMonitor):
    r"""Write histograms of :math:`\log_{10}|g|` of the gradients to TensorBoard: each early step, then periodically.

    This is the figure of Liu et al. (2020, Fig. 2): stacked per step (TensorBoard's histogram
    dashboard, "offset" mode), the distribution of gradient magnitudes distorts in the first
    updates of Adam without warmup and stays stable with warmup or RAdam.

    Gradients are read in ``on_before_optimizer_step`` by default: accumulated over
    ``accumulate_grad_batches``, unscaled by the precision plugin's GradScaler, all-reduced by DDP,
    and before gradient clipping. ``when="after_clip"`` reads them after ``optimizer.step()``
    instead, i.e. after clipping (a step that the GradScaler skips is then not logged). For fused
    optimizers that unscale inside their own step, the GradScaler's scale is divided out of the
    histogram (read on logging steps only). Binning is exact and runs on the gradients' device
    (:func:`log2_bucket_counts`); only bucket counts reach the host. Nothing is computed and nothing
    synchronises on steps that are not logged, nor on ranks other than zero, except under sharded training
    (FSDP2: DTensor gradients), where every rank bins its own shard of each gradient on the logging steps and the
    counts are summed across the ranks that hold the shards (not across replicas); rank zero writes.

    When: every optimizer step before ``early_steps`` (50), then every ``every_n_steps`` (by default the
    Trainer's ``log_every_n_steps``, 50 unless set): the density goes where the distortion happens, at the cost
    of Lightning's own logging afterwards.

    The step of every point is ``trainer.fit_loop.epoch_loop._batches_that_stepped``, the step
    ``self.log`` uses, so the histograms line up with the other training curves; with gradient
    accumulation there is one point per optimizer step.

    A logged step's values reach a TensorBoardLogger as one event, written in the training thread; setting up the
    monitor makes TensorBoard's event writer checksum its records in C (``google-crc32c``) instead of pure Python,
    process-wide (the same bytes).

    Logged names (``{prefix}`` is ``"grad"`` by default; ``{opt}`` is empty with one optimizer and
    ``optimizer{i}/`` with several):

    - ``{prefix}/{opt}log10_abs`` (histogram): log10|g| over all finite non-zero gradient elements
      of the optimizer's parameters; the bucket limits are log10 of the bucket edges.
    - ``{prefix}/{opt}log10_abs/early`` (histogram): the same at each of the first ``min(early_steps, 51)``
      steps, so that TensorBoard's Histograms dashboard, which draws 51 points per tag, shows every one of them.
    - ``{prefix}/{opt}zeros`` and ``{prefix}/{opt}nonfinite`` (scalars): numbers of gradient
      elements that are exactly zero, and that are inf or NaN.
    - ``{prefix}/layer/{name}/log10_abs`` (histogram): the same for each parameter whose name
      (as in ``named_parameters()``) matches ``layers``.
    - ``{prefix}/{opt}log10_abs/p01``, ``/p10``, ``/p50``, ``/p90``, ``/p99`` (scalars), and the same under each
      per-layer histogram's name: quantiles of log10|g| from the bucket counts (linear within a bucket), so the
      distribution reads as five curves in any logger.
    - ``{prefix}/{opt}distortion`` (scalar): decades by which the distribution of log10|g| has moved towards
      zero since step 0 (:func:`~lightning_radam.callbacks.distortion.distortion`, the downward part of the
      1-Wasserstein distance).
    - ``{prefix}/{opt}log10_abs/stacked`` (image), also ``{prefix}_{opt}log10_abs_stacked_step{N}.png`` (with
      ``/`` as ``_``) in the logger's directory: the stacked histogram of every logged step so far, the paper's
      Figure 2, drawn at the end of the early phase and at the end of the fit.

    The distortion alarm: if the distortion reaches ``distortion_threshold`` decades at a step before
    ``distortion_steps``, the early distortion of Adam without warmup, the callback warns once (a
    :class:`DistortionWarning` that says what it saw, in numbers, and what to do: RAdam, or a warmup such as
    ``RAdamMixin``'s ``warmup="untuned_linear"``), records the step in :attr:`alarm_step` and, with
    ``on_distortion="stop"``, stops the fit (``trainer.should_stop``, agreed by every rank). Later steps never fire
    it: a healthy run's gradients shrink too, only more slowly. The defaults were chosen on the warmup study
    (docs/monitoring.md, "The distortion alarm").

    Scalars go to every logger in ``trainer.loggers``; histograms need a ``TensorBoardLogger``
    (without one the callback warns once and logs the scalars only).

    Args:
        every_n_steps: after the early phase, log on optimizer steps whose index is a multiple of this;
            ``None`` for the Trainer's ``log_every_n_steps`` (50 by default in Lightning); ``1`` with
            ``early_steps=0`` logs every step (default: None).
        early_steps: log every optimizer step from step 0 up to this step (excluded), where the distortion of
            the paper's Figure 2 happens, and write the first 51 of them to the ``.../early`` tag too; 0 for none
            (default: 50).
        layers: regular expression searched in parameter names (``re.search``); each matching
            parameter gets its own histogram (a pattern that matches no parameter warns at fit start).
            ``None`` for the global histogram only (default: None).
        layer_every_n_steps: write the per-layer histograms only on logged steps whose index is a multiple of this;
            ``None`` for every logged step (default: None).
        when: ``"before_clip"`` (gradients as the optimizer receives them before clipping) or
            ``"after_clip"`` (after clipping, read after the optimizer step) (default: "before_clip").
        prefix: first component(s) of every tag, so that two instances (say, one per ``when``) can
            run together; two instances with the same prefix are rejected (default: "grad").
        subsample: bin every ``subsample``-th element of each flattened gradient (of each rank's shard under
            FSDP2) instead of all of them, starting at offset ``i % subsample`` on the ``i``-th logged step (so
            ``subsample`` consecutive logged steps cover every element once), with all counts (zeros and
            non-finite included) multiplied by ``subsample``: estimates, for when exact counting costs too much.
            ``1`` is exact; at most ``2**32``, so that the estimates cannot overflow int64 (default: 1).
        on_distortion: ``"warn"``, ``"stop"`` (warn and stop the fit) or ``"ignore"`` (the ``distortion`` scalar
            only) when the distortion alarm fires (default: "warn").
        distortion_threshold: decades of distortion that fire the alarm, > 0 (default: 3.0).
        distortion_steps: only steps before this one can fire the alarm, >= 1; they should be logged one by one,
            as the default ``early_steps`` does (default: 30).

    Raises:
        ValueError: if ``every_n_steps``, ``layer_every_n_steps`` or ``subsample`` is < 1, ``early_steps`` < 0,
            ``subsample`` is > ``2**32``, ``layers`` is not a valid regular expression, ``when`` is unknown or
            ``prefix`` is empty or has a leading, trailing or doubled ``/``; at setup, if another
            GradientHistogramMonitor of the Trainer has the same ``prefix`` (both would write the same tags);
            if ``on_distortion`` is unknown, ``distortion_threshold`` is not a finite number > 0 or
            ``distortion_steps`` is not an int >= 1.
        TypeError: if an argument has the wrong type.
        MisconfigurationException: at fit start, if the Trainer has no logger.

    Example:
        >>> from lightning import Trainer
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from lightning_radam.callbacks import GradientHistogramMonitor
        >>> monitor = GradientHistogramMonitor(layers=r"attn", layer_every_n_steps=10, on_distortion="stop")
        >>> trainer = Trainer(logger=TensorBoardLogger("runs"), callbacks=[monitor], max_steps=1000)
        >>> monitor.alarm_step is None  # after trainer.fit(...): the step at which the alarm fired, if it did
        True
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        early_steps: int = EARLY_STEPS,
        layers: str | None = None,
        layer_every_n_steps: int | None = None,
        when: str = "before_clip",
        prefix: str = "grad",
        subsample: int = 1,
        on_distortion: str = "warn",
        distortion_threshold: float = DEFAULT_THRESHOLD,
        distortion_steps: int = DEFAULT_EARLY_STEPS,
    ) -> None:
        super().__init__(every_n_steps, early_steps)
        self.layers = _compile_pattern(layers, "layers")
        self.layer_every_n_steps = (
            None if layer_every_n_steps is None else check_int("layer_every_n_steps", layer_every_n_steps, minimum=1)
        )
        self.when = check_choice("when", when, _WHEN)
        self.prefix = _check_prefix(prefix)
        self.subsample = check_int("subsample", subsample, minimum=1)
        if self.subsample > MAX_SUBSAMPLE:
            raise ValueError(f"Invalid subsample: {subsample} (expected 1 <= subsample <= {MAX_SUBSAMPLE})")
        self.on_distortion = check_choice("on_distortion", on_distortion, _ON_DISTORTION)
        self.distortion_threshold = check_positive("distortion_threshold", distortion_threshold)
        self.distortion_steps = check_int("distortion_steps", distortion_steps, minimum=1)
        self._pending: dict[int, _Pending] = {}
        self._hooks: dict[int, Any] = {}
        self._write_histograms = True
        self._alarms: dict[int, DistortionAlarm] = {}  # optimizer index -> its alarm (rank zero)
        self._stop_pending = False
        self._history: dict[int, _History] = {}  # optimizer index -> global histograms of the logged steps
        self._drawn: dict[int, int] = {}  # optimizer index -> step of the last picture

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix, when=self.when)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r}, when={self.when!r})"

    @property
    def alarm_step(self) -> int | None:
        """The optimizer step at which the distortion alarm fired (the earliest, with several optimizers), or None.

        Part of the callback's checkpointed state: a resumed fit knows that its alarm has fired.
        """
        steps = [alarm.alarm_step for alarm in self._alarms.values() if alarm.alarm_step is not None]
        return min(steps) if steps else None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "history": {i: h.state_dict() for i, h in self._history.items()},
            "alarms": {i: alarm.state_dict() for i, alarm in self._alarms.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._history = {int(i): _History.from_state(h) for i, h in state_dict.get("history", {}).items()}
        self._alarms = {}
        for i, state in state_dict.get("alarms", {}).items():
            self._alarms[int(i)] = self._new_alarm()
            self._alarms[int(i)].load_state_dict(state)

    def _new_alarm(self) -> DistortionAlarm:
        return DistortionAlarm(_FINITE_LOWER, _FINITE_UPPER, self.distortion_threshold, self.distortion_steps)

    def _raise_alarm(self, trainer: pl.Trainer, alarm: DistortionAlarm) -> None:
        """One rank-zero warning with the alarm's message; ``on_distortion="stop"`` also stops after this batch."""
        action = " Stopping the fit (on_distortion='stop')." if self.on_distortion == "stop" else ""
        rank_zero_warn(f"{self!r}: {alarm.message}{action}", category=DistortionWarning)
        self._stop_pending = self.on_distortion == "stop"

    def _remove_hooks(self) -> None:
        """Remove the step post-hooks of ``when="after_clip"`` still registered: their step was skipped (GradScaler) or
        never ran, or raised."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    @override
    def _reset(self) -> None:
        super()._reset()
        self._remove_hooks()  # left on the last fit's optimizer by a step that raised
        self._pending = {}
        self._history, self._drawn, self._alarms, self._stop_pending = {}, {}, {}, False

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        for other in _callbacks(trainer):
            if other is not self and isinstance(other, GradientHistogramMonitor) and other.prefix == self.prefix:
                raise ValueError(
                    f"{self!r} and {other!r} would both write the tags {self.prefix}/...: give one another prefix"
                )

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_fit_start(trainer, pl_module)
        _layers_match(self, self.layers, self._names)
        self._write_histograms = bool(_tensorboard_loggers(trainer))
        if not self._write_histograms:
            rank_zero_warn(
                f"{self!r}: no TensorBoardLogger in trainer.loggers, so no histograms and no stacked picture are"
                f" written; the scalars still are ({self.prefix}/.../log10_abs/p01-p99, distortion, zeros, nonfinite)."
            )

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        logging = self._logging_step(trainer, optimizer)  # decided on the host before any device work
        if logging is None:
            return
        step, index = logging
        with_layers = (  # per-layer quantiles go to every logger; their histograms to TensorBoard
            self.layers is not None and (self.layer_every_n_steps is None or step % self.layer_every_n_steps == 0)
        )
        if self.when == "before_clip":
            self._pending[index] = self._collect(trainer, optimizer, index, step, with_layers)
        elif index not in self._hooks:  # removed at the batch's end: never while torch loops over the hooks

            def read_after_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                self._pending[index] = self._collect(trainer, opt, index, step, with_layers)

            self._hooks[index] = optimizer.register_step_post_hook(read_after_step)

    @torch.no_grad()
    def _collect(
        self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer, index: int, step: int, with_layers: bool
    ) -> _Pending:
        pending = _Pending(prefix=f"{self.prefix}/{_optimizer_prefix(trainer, index)}")
        counts, nonzero, numel = [], [], 0
        likes, layers = [], []  # the gradients, and the indices of those with their own histogram
        small: list[Tensor] = []  # small gradients on the CPU, without a histogram of their own: binned together
        offset = self._schedule_index(step) % self.subsample  # consecutive *logged* steps cover every element
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = local_tensor(p.grad)  # a DTensor's shard on this rank (FSDP2), else the whole gradient
                grad = grad if self.subsample == 1 else grad.reshape(-1)[offset :: self.subsample]
                numel += grad.numel()
                name = self._names.get(id(p))
                own = with_layers and name is not None and self.layers is not None and self.layers.search(name)
                if not own and grad.numel() < _BATCH_BELOW and grad.is_cpu and not is_dtensor(p.grad):
                    small.append(grad.reshape(-1))
                    continue
                pieces: list[Tensor] = []  # the non-zero elements of each piece
                counts.append(_bin(grad, pieces))
                nonzero.append(_sum(pieces))
                likes.append(p.grad)
                if own:
                    pending.tags.append(f"{self.prefix}/layer/{name}/log10_abs")
                    pending.counts.append(counts[-1])
                    pending.nonzero.append(nonzero[-1])
                    pending.numel.append(grad.numel())
                    layers.append(len(likes) - 1)
        if small:  # plain tensors: binned on this rank alone, never summed across ranks
            batch = torch.cat(small)  # in the widest of their dtypes, whose buckets are theirs (exact conversions)
            pieces = []
            counts.append(_bin(batch, pieces))
            nonzero.append(_sum(pieces))
            likes.append(batch)
        if counts:
            pending.tags.insert(0, f"{pending.prefix}log10_abs")
            pending.counts.insert(0, _sum(counts))
            pending.nonzero.insert(0, _sum(nonzero))
            pending.numel.insert(0, numel)
        if any(is_dtensor(like) for like in likes):  # FSDP2: the counts so far are those of this rank's shards
            pending.counts, pending.nonzero, pending.numel = sum_histograms_across_shards(
                counts, nonzero, likes, layers
            )
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and self.when == "before_clip" and optimizer_handles_unscaling(optimizer):
            pending.log10_scale = math.log10(float(scaler.get_scale()))  # gradients are still scaled here
        return pending

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._remove_hooks()
        step = _logged_step(trainer)
        if self._pending:
            self._publish(trainer, step)
        if self.on_distortion == "stop" and step < self.distortion_steps:
            # rank zero judges; every rank takes this decision at the same steps, so that they stop together
            stop = trainer.strategy.reduce_boolean_decision(self._stop_pending, all=False)
            self._stop_pending = False
            trainer.should_stop = trainer.should_stop or stop

    def _publish(self, trainer: pl.Trainer, step: int) -> None:
        """Bring the pending counts to the host, log the scalars, write the histograms and the picture."""
        pending, self._pending = self._pending, {}
        for index, item in pending.items():
            self._last_logged[index] = step
            if not item.tags or not trainer.is_global_zero:  # under FSDP2 every rank computes, rank zero writes
                continue
            # the one device-to-host transfer: bucket counts and non-zero counts of every histogram
            buckets = _stack(item.counts)
            rows = torch.cat([buckets, _stack(item.nonzero).to(buckets.device)[:, None]], dim=1).cpu().numpy()
            if self.subsample != 1:
                rows *= self.subsample  # estimates of the full counts
            zeros = np.asarray(item.numel) * self.subsample - rows[:, -1]
            counts = rows[:, :-1]
            counts[:, 0] -= zeros  # bucket 0 holds zero and the smallest subnormals
            finite = counts[:, :_FIRST_NONFINITE]
            scalars = {
                f"{item.prefix}zeros": float(zeros[0]),
                f"{item.prefix}nonfinite": float(rows[0, _FIRST_NONFINITE:-1].sum()),
            }
            span = occupied_span(finite.any(0) if len(finite) > 1 else finite[0])  # the buckets some row occupies
            levels = _quantiles(
                finite[:, span].astype(np.float64),
                _FINITE_LOWER[span] - item.log10_scale,
                _FINITE_UPPER[span] - item.log10_scale,
                _QUANTILES,
            )
            for tag, row in zip(item.tags, levels, strict=True):
                scalars.update(
                    {
                        f"{tag}/{name}": float(value)
                        for name, value in zip(QUANTILE_NAMES, row, strict=True)
                        if math.isfinite(value)
                    }
                )
            unscaled = _unscaled(finite[0], item.log10_scale)
            alarm = self._alarms.get(index) or self._alarms.setdefault(index, self._new_alarm())
            score = alarm.update(step, unscaled)
            if math.isfinite(score):
                scalars[f"{item.prefix}distortion"] = score
            histograms: list[Summary.Value] = []
            if self._write_histograms:
                early = step < min(self.early_steps, HISTOGRAMS_DASHBOARD_POINTS)  # every point drawn by the dashboard
                for i, (tag, row) in enumerate(zip(item.tags, counts, strict=True)):
                    tags = [tag, f"{item.prefix}log10_abs/early"] if i == 0 and early else [tag]
                    histograms += _histogram_values(tags, row, item.log10_scale)
            _log_scalars(trainer, scalars, step, histograms)  # one event for all of them, where the logger allows
            if alarm.alarm_step == step and self.on_distortion != "ignore":
                self._raise_alarm(trainer, alarm)
            if self._write_histograms:
                history = self._history.setdefault(index, _History())
                history.add(step, unscaled.copy(), self.early_steps)  # a row of its own, not a view of all rows
                if step == self.early_steps - 1:
                    self._draw(trainer, index)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for index, history in self._history.items():
            if history.steps and history.steps[-1] != self._drawn.get(index):
                self._draw(trainer, index)

    def _draw(self, trainer: pl.Trainer, index: int) -> None:
        """The stacked histogram of the logged steps so far, to the Images tab and a PNG in each log directory."""
        history = self._history[index]
        step = self._drawn[index] = history.steps[-1]
        tag = f"{self.prefix}/{_optimizer_prefix(trainer, index)}log10_abs/stacked"
        rgb = render_stacked_histogram(
            history.steps, np.stack(history.rows), _FINITE_LOWER, _FINITE_UPPER,
            title=f"{tag}, steps {history.steps[0]}-{step}",
        )  # fmt: skip
        png = encode_png(rgb)
        for logger in _tensorboard_loggers(trainer):
            image = image_summary(_tag_prefix(logger) + tag, png, *rgb.shape[:2])  # prefixed as its scalars are
            summary_file_writer(logger.experiment).add_summary(image, step)
            logger.experiment.flush()  # the picture shows while the run goes on
            path = Path(logger.log_dir) / f"{tag.replace('/', '_')}_step{step}.png"
            path.write_bytes(png)


def _histogram_values(tags: list[str], counts: np.ndarray, log10_scale: float) -> list[Summary.Value]:
    """One histogram of bucket counts as TensorBoard's raw histogram (what ``add_histogram_raw`` writes), under each of
    ``tags``; none if no finite bucket is occupied."""
    finite = counts[:_FIRST_NONFINITE]
    span = occupied_span(finite)
    if span.stop == 0:
        return []
    lo, hi = span.start, span.stop
    bucket = finite[lo:hi].astype(np.float64)
    middle = _LOG10_MIDDLE[lo:hi] - log10_scale  # sum and sum_squares are bucket-midpoint estimates
    histogram = HistogramProto(
        min=float(_LOG10_LOWER[lo] - log10_scale), max=float(_LOG10_UPPER[hi - 1] - log10_scale),
        num=int(bucket.sum()), sum=float(bucket @ middle), sum_squares=float(bucket @ (middle * middle)),
        bucket_limit=(_LOG10_UPPER[lo:hi] - log10_scale).tolist(), bucket=bucket.tolist(),
    )  # fmt: skip
    return [Summary.Value(tag=tag, histo=histogram) for tag in tags]
