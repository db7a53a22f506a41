"""Helpers shared by the monitoring callbacks: when to log, where to log, what to call things."""

from __future__ import annotations

import os
import re
import time
import weakref
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from tensorboard.compat.proto.event_pb2 import Event, SessionLog  # type: ignore[import-untyped]
from tensorboard.compat.proto.summary_pb2 import Summary  # type: ignore[import-untyped]
from tensorboard.compat.tensorflow_stub.io.gfile import GFile, LocalFileSystem  # type: ignore[import-untyped]
from tensorboard.summary.writer.record_writer import RecordWriter  # type: ignore[import-untyped]
from torch.utils.tensorboard import SummaryWriter
from typing_extensions import override

from lightning_radam._checks import check_int
from lightning_radam._compat import batches_that_stepped, log_every_n_steps, logger_prefix, summary_file_writer

from ._checksum import use_fast_checksums
from ._distributed import takes_part

#: Optimizer steps logged one by one from step 0 before the regular interval starts (both monitors' default): the
#: distortion of Liu et al. (2020, Fig. 2) and the unrectified steps happen there.
EARLY_STEPS = 50


def _compile_pattern(pattern: Any, name: str) -> re.Pattern | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"Invalid {name}: expected a regular expression (str) or None, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"Invalid {name}: {pattern!r} is not a regular expression ({error})") from None


def _layers_match(owner: Callback, pattern: re.Pattern | None, names: dict[int, str]) -> bool:
    """Whether ``layers`` selects a parameter; if it is set and selects none, a warning naming it (once per fit)."""
    if pattern is None:
        return False
    if any(pattern.search(name) for name in names.values()):
        return True
    rank_zero_warn(
        f"{type(owner).__name__}: layers={pattern.pattern!r} matches no parameter name, so no per-layer values are"
        " logged (names are searched as in named_parameters(), e.g. 'hidden.weight')."
    )
    return False


def _check_prefix(prefix: Any) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"Invalid prefix: expected a str, got {prefix!r}")
    if not prefix or "" in prefix.split("/"):
        raise ValueError(
            f"Invalid prefix: {prefix!r} (expected a non-empty str without a leading, trailing or doubled /)"
        )
    return prefix


def _logged_step(trainer: pl.Trainer) -> int:
    """The step index ``self.log`` uses during a training batch: optimizer steps taken before this batch."""
    return batches_that_stepped(trainer)


def _optimizer_index(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> int:
    for index, candidate in enumerate(trainer.optimizers):
        if candidate is optimizer or getattr(candidate, "optimizer", None) is optimizer:
            return index
    return 0


def _optimizer_prefix(trainer: pl.Trainer, index: int) -> str:
    """``""`` with one optimizer, ``"optimizer{index}/"`` with several, so tags stay distinct."""
    return "" if len(trainer.optimizers) <= 1 else f"optimizer{index}/"


def _parameter_names(pl_module: pl.LightningModule) -> dict[int, str]:
    return {id(p): name for name, p in pl_module.named_parameters()}


def _callbacks(trainer: pl.Trainer) -> list[Callback]:
    return list(trainer.callbacks)  # type: ignore[attr-defined]  # set by Lightning's callback connector


def _tensorboard_loggers(trainer: pl.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _tag_prefix(logger: TensorBoardLogger) -> str:
    """What ``logger.log_metrics`` puts before each metric name: its ``prefix`` and join character ("" for none). The
    monitors put it before the tags they write themselves (histograms, the picture, the layout's tags) too."""
    prefix = logger_prefix(logger)
    return f"{prefix}{logger.LOGGER_JOIN_CHAR}" if prefix else ""


def _event_file_writer(logger: Logger) -> Any | None:
    """The event-file writer of ``logger`` if its ``log_metrics`` would write each metric to it under the metric's own
    name, one ``simple_value`` per event: Lightning's own ``TensorBoardLogger.log_metrics``, without a ``prefix``,
    writing through torch's ``SummaryWriter`` (a closed one is opened again, as ``log_metrics`` would). Else ``None``,
    also on ranks other than zero (where ``experiment`` is a stand-in)."""
    if not isinstance(logger, TensorBoardLogger) or type(logger).log_metrics is not TensorBoardLogger.log_metrics:
        return None
    if logger_prefix(logger) != "":
        return None
    writer = logger.experiment
    return summary_file_writer(writer) if isinstance(writer, SummaryWriter) else None


def _log_scalars(
    trainer: pl.Trainer, metrics: dict[str, float], step: int, histograms: Sequence[Summary.Value] = ()
) -> None:
    """Log ``metrics`` at ``step`` to every logger of the Trainer, and ``histograms`` to every TensorBoardLogger.

    To a TensorBoardLogger they go as one event that holds every scalar and histogram, which TensorBoard reads as it
    reads the one event per value that ``log_metrics`` and ``add_histogram_raw`` write (a Summary, an Event and a
    checksummed record for each, and the writer's thread woken for each). Other loggers, and TensorBoardLoggers with a
    ``prefix`` or a ``log_metrics`` of their own, get ``log_metrics`` (and the latter the histograms in an event apart).
    """
    summary = None
    for logger in trainer.loggers:
        writer = _event_file_writer(logger)
        if writer is None:
            if metrics:
                logger.log_metrics(metrics, step=step)
            if isinstance(logger, TensorBoardLogger):
                start = _tag_prefix(logger)  # as log_metrics names the scalars
                for value in histograms:  # through the writer's own API, whichever SummaryWriter it is
                    h = value.histo
                    logger.experiment.add_histogram_raw(
                        start + value.tag, min=h.min, max=h.max, num=h.num, sum=h.sum, sum_squares=h.sum_squares,
                        bucket_limits=list(h.bucket_limit), bucket_counts=list(h.bucket), global_step=step,
                    )  # fmt: skip
            continue
        if summary is None:
            scalars = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in metrics.items()]
            summary = Summary(value=[*scalars, *histograms])
        if summary.value:
            _add_summary(writer, summary, step)


def _add_summary(file_writer: Any, summary: Summary, step: int) -> None:
    """``file_writer.add_summary(summary, step)``, with the record written in this thread where that is safe.

    TensorBoard's event-file writer queues each record for a thread of its own, which writes it holding the GIL: a
    hand-over of the GIL to that thread and back for every record, which the training thread waits out (about 0.15 ms
    a record on a 2-core VM). Where the writer has the parts of TensorBoard's ``_AsyncWriter`` (its lock, its queue,
    its record writer), the record is written here instead, under that lock and once the queue is empty: in the
    order of submission, as the thread would have written it. Anything else gets ``add_summary``.
    """
    event = Event(summary=summary, step=step, wall_time=time.time())
    async_writer = getattr(getattr(file_writer, "event_writer", None), "_async_writer", None)
    parts: list[Any] = [
        getattr(async_writer, name, None) for name in ("_lock", "_byte_queue", "_writer", "_check_worker_status")
    ]
    if any(part is None for part in parts) or getattr(async_writer, "_closed", True) is not False:
        file_writer.add_event(event)
        return
    lock, queue, record_writer, check_worker = parts
    data = event.SerializeToString()
    with lock:  # as _AsyncWriter.write: no record is queued meanwhile
        check_worker()  # a failed writer thread raises its error here, as it would on a queued write
        queue.join()  # the records queued before this one are written first
        _appending_writer(record_writer).write(data)


class _Appender:
    """A file-like object that appends each ``write`` to a local file through a descriptor kept open (``O_APPEND``)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open: closed with the GFile it stands for)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # an unbuffered write may take fewer bytes than it is given
            view = view[self._file.write(view) or 0 :]

    def flush(self) -> None:
        """Nothing to do: every write reached the file."""

    def unlinked(self) -> bool:
        """Whether the file was deleted since it was opened (its descriptor then writes to no path)."""
        return os.fstat(self._file.fileno()).st_nlink == 0

    def close(self) -> None:
        self._file.close()

    def __del__(self) -> None:  # with the GFile it stands for (a weak key below), without a ResourceWarning
        self._file.close()


#: TensorBoard's GFile -> a RecordWriter over an _Appender of the same file
_APPENDERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _appending_writer(record_writer: Any) -> Any:
    """``record_writer``, or a ``RecordWriter`` that writes the same records to the same local file through a
    descriptor kept open.

    TensorBoard's own GFile (the one it uses without TensorFlow) opens, appends to and closes the file for every record:
    tens of microseconds, which the monitors would wait out in the training thread. A descriptor opened in append mode
    next to it writes the same bytes in one system call; both append at the end of the file, so the order of the
    records is the order of the writes. Used only for a GFile on the local filesystem that has written its first record
    (which truncates the file) and is open; any other writer (TensorFlow's GFile, a remote filesystem) is returned as
    it is. If the file is deleted during the run, the next record goes through the GFile, which makes it again at its
    path (as it does for its own records), and the records after it through a descriptor of the new file.
    """
    file: Any = getattr(record_writer, "_writer", None)
    if type(file) is not GFile:
        return record_writer
    appending = _APPENDERS.get(file)
    if appending is not None:
        if not (file.closed or appending._writer.unlinked()):
            return appending
        _APPENDERS.pop(file).close()  # a deleted file is made again by the GFile's own append, at its path
        return record_writer
    if not (isinstance(file.fs, LocalFileSystem) and file.write_started and not file.closed and file.binary_mode):
        return record_writer
    appending = _APPENDERS[file] = RecordWriter(_Appender(file.filename))
    return appending


def _purge_from(writer: Any, step: int) -> None:
    """Mark a restart at ``step``: TensorBoard then drops the events of earlier files at steps >= ``step``.

    The marker is the one ``SummaryWriter(purge_step=step)`` writes, a ``SessionLog.START`` event at ``step``;
    TensorBoard's reader (``purge_orphaned_data``, on by default) purges every tag at that step and after, so
    what an interrupted run logged after its last checkpoint is shown once, as the resumed run logs it again.
    """
    if not isinstance(writer, SummaryWriter):
        rank_zero_warn(f"Cannot mark the resume in {type(writer).__name__}: steps after the checkpoint may show twice.")
        return
    if writer.file_writer is None:  # closed (a logger reused after a fit): the next write opens a new file
        writer.purge_step = step  # which then starts with this marker
        return
    writer.file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
    writer.flush()


class _StepMonitor(Callback):
    """What both monitors share: the logging schedule, the last logged step per optimizer, the logger check.

    The schedule (:meth:`_scheduled`): every optimizer step before ``early_steps``, then every ``every_n_steps``
    (``None``: the Trainer's ``log_every_n_steps``). ``_last_logged`` is the callback's checkpointed state: a resumed
    run logs neither a step twice nor skips one.
    """

    def __init__(self, every_n_steps: int | None, early_steps: int) -> None:
        self.every_n_steps = None if every_n_steps is None else check_int("every_n_steps", every_n_steps, minimum=1)
        self.early_steps = check_int("early_steps", early_steps, minimum=0)
        self._interval = self.every_n_steps or 1  # resolved at fit start when every_n_steps is None
        self._last_logged: dict[int, int] = {}  # optimizer index -> last logged step
        self._names: dict[int, str] = {}
        self._purge_pending = False

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"last_logged": dict(self._last_logged)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_logged = {int(k): int(v) for k, v in state_dict.get("last_logged", {}).items()}

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # validate, test and predict log nothing here and keep what the last fit left
            self._reset()
        use_fast_checksums()  # TensorBoard's writer checksums records in pure Python: the same values in C

    def _reset(self) -> None:
        """Forget the last fit: a new one starts from step 0 (a checkpoint's state is restored after this), also
        after a fit that raised between the hooks of a step."""
        self._last_logged = {}

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.loggers:
            raise MisconfigurationException(f"Cannot use {type(self).__name__} with a Trainer that has no logger.")
        self._names = _parameter_names(pl_module)
        self._interval = self.every_n_steps or log_every_n_steps(trainer)  # 0: nothing after the early phase
        if self._interval == 0 and self.early_steps == 0:
            rank_zero_warn(
                f"{self!r} logs no step: early_steps=0, and Trainer(log_every_n_steps=0) with every_n_steps=None"
                " leaves no regular interval (set every_n_steps or early_steps)."
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A fit resumed from a checkpoint repeats the steps the interrupted run logged after it: TensorBoard is told
        # to drop those, for every tag (Lightning logs self.log metrics at the same step as ours). Once per fit, by
        # the first monitor, at the first batch: Lightning sets the resumed step only when that batch's epoch starts.
        callbacks = trainer.callbacks  # type: ignore[attr-defined]
        first = next(callback for callback in callbacks if isinstance(callback, _StepMonitor))
        self._purge_pending = bool(trainer.ckpt_path) and trainer.is_global_zero and self is first

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._purge_pending:
            self._purge_pending = False
            step = _logged_step(trainer)
            if step > 0:  # at step 0 the marker would also drop what this fit wrote at its start (layout, hparams)
                for logger in _tensorboard_loggers(trainer):
                    _purge_from(logger.experiment, step)

    def _scheduled(self, step: int) -> bool:
        """Whether optimizer step ``step`` is on the logging schedule (the same answer on every rank)."""
        return step < self.early_steps or (self._interval > 0 and step % self._interval == 0)

    def _schedule_index(self, step: int) -> int:
        """How many steps of the schedule come before ``step``: consecutive logged steps get consecutive indices."""
        if step <= self.early_steps or self._interval == 0:
            return min(step, self.early_steps)
        multiples_below = lambda n: -(-n // self._interval)  # multiples of the interval in [0, n)
        return self.early_steps + multiples_below(step) - multiples_below(self.early_steps)

    def _logging_step(self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> tuple[int, int] | None:
        """``(step, optimizer index)`` if this optimizer step is logged here, else ``None``; host-side only."""
        step = _logged_step(trainer)
        if not self._scheduled(step):  # first the schedule, so other ranks scan the parameters on logging steps only
            return None
        if not takes_part(trainer, optimizer):  # rank zero; every rank where parameters are DTensors (FSDP2)
            return None
        index = _optimizer_index(trainer, optimizer)
        if step <= self._last_logged.get(index, -1):
            return None
        return step, index
