"""Both monitors inside Lightning: accumulation, loggers, precision, resume, several optimizers, the layout, bad
input."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Model, event_log, known_gradients, make_trainer, read_events, scalar_series
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.io.gfile import GFile
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard import SummaryWriter

from lightning_radam import RAdam
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor, monitoring_layout
from lightning_radam.callbacks._common import _APPENDERS, _add_summary, _appending_writer, _log_scalars
from lightning_radam.rectification import rho_t


def both(**histogram_kwargs):
    return [RectificationMonitor(), GradientHistogramMonitor(**histogram_kwargs)]


@pytest.mark.parametrize(
    ("accumulate", "every_n_steps", "early_steps", "expected"),
    [(3, 1, 0, [0, 1, 2, 3]), (2, 2, 0, [0, 2]), (2, 3, 2, [0, 1, 3])],
)
def test_monitors_log_once_per_optimizer_step_under_accumulation(
    tmp_path, accumulate, every_n_steps, early_steps, expected
):
    callbacks = [
        RectificationMonitor(every_n_steps=every_n_steps, early_steps=early_steps),
        GradientHistogramMonitor(every_n_steps=every_n_steps, early_steps=early_steps),
    ]
    trainer = make_trainer(tmp_path, callbacks, max_steps=4, accumulate_grad_batches=accumulate)
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    assert [h.step for h in events.Histograms("grad/log10_abs")] == expected
    steps, t = scalar_series(events, "radam/group0/step")
    assert steps == expected
    assert t.tolist() == [s + 1.0 for s in expected]  # rho_t advances once per optimizer step


def test_monitors_send_scalars_to_csv_and_warn_once_without_tensorboard(tmp_path):
    trainer = make_trainer(tmp_path, both(layers="hidden"), max_steps=5, logger=CSVLogger(tmp_path, name="", version=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Model())
    messages = [str(w.message) for w in caught if "TensorBoardLogger" in str(w.message)]
    assert len(messages) == 1
    assert messages[0].startswith("GradientHistogramMonitor(prefix='grad', when='before_clip'): no TensorBoardLogger")
    header, *rows = (tmp_path / "version_0" / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    per_layer = [f"grad/layer/hidden.{kind}/log10_abs/{q}" for kind in ("weight", "bias") for q in ("p01", "p99")]
    for name in ("radam/group0/rho_t", "radam/group0/skipped", "grad/zeros", "grad/nonfinite", *per_layer):
        assert name in columns
    cells = [row.split(",") for row in rows]
    rho = [
        (int(c[columns.index("step")]), float(c[columns.index("radam/group0/rho_t")]))
        for c in cells
        if c[columns.index("radam/group0/rho_t")]
    ]
    assert rho == [(step, pytest.approx(rho_t(step + 1, 0.98), rel=1e-6)) for step in range(5)]


def test_monitors_with_tensorboard_and_csv_write_to_both(tmp_path):
    loggers = [TensorBoardLogger(tmp_path, name="", version=0), CSVLogger(tmp_path, name="csv", version=0)]
    trainer = make_trainer(tmp_path, both(), max_steps=3, logger=loggers, precision="bf16-mixed")
    trainer.fit(Model())
    events = read_events(loggers[0].log_dir)
    assert [h.step for h in events.Histograms("grad/log10_abs")] == [0, 1, 2]
    assert scalar_series(events, "radam/group0/rho_t")[0] == [0, 1, 2]
    assert "radam/group0/rho_t" in (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_monitors_resume_without_duplicate_or_missing_steps(tmp_path):
    straight = make_trainer(tmp_path / "straight", both(), max_steps=6)
    straight.fit(Model())
    first = make_trainer(tmp_path / "resumed", both(), max_steps=3)
    first.fit(Model())
    first.save_checkpoint(tmp_path / "step3.ckpt")
    second = make_trainer(tmp_path / "resumed", both(), max_steps=6)
    second.fit(Model(), ckpt_path=tmp_path / "step3.ckpt")
    expected, resumed = read_events(straight.logger.log_dir), read_events(second.logger.log_dir)
    assert len(list((tmp_path / "resumed" / "version_0").glob("events.out.tfevents.*"))) == 2
    for tag in ("radam/group0/step", "radam/group0/rho_t", "radam/group0/r_t", "grad/zeros"):
        assert scalar_series(resumed, tag)[0] == [0, 1, 2, 3, 4, 5], tag
    for tag in ("radam/group0/step", "radam/group0/rho_t", "radam/group0/r_t"):
        assert scalar_series(resumed, tag)[1].tolist() == scalar_series(expected, tag)[1].tolist(), tag
    assert [h.step for h in resumed.Histograms("grad/log10_abs")] == [0, 1, 2, 3, 4, 5]
    # the picture at the end of the resumed fit starts at step 0: the histograms before the checkpoint were restored
    before, after = (trainer.callbacks[1].state_dict()["history"][0] for trainer in (first, second))
    assert (before["steps"], after["steps"]) == ([0, 1, 2], [0, 1, 2, 3, 4, 5])
    rows = [torch.zeros(len(state["steps"]), 1024, dtype=torch.int64) for state in (before, after)]
    for row, state in zip(rows, (before, after), strict=True):
        row[:, state["offset"] : state["offset"] + state["counts"].shape[1]] = state["counts"]
    assert torch.equal(rows[1][:3], rows[0])
    assert [image.step for image in resumed.Images("grad/log10_abs/stacked")] == [2, 5]


class TwoOptimizerModel(Model):
    """Manual optimization: optimizer 0 (RAdam) steps every batch, optimizer 1 (Adam) every other batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        first, second = self.optimizers()
        loss = torch.nn.functional.cross_entropy(self(x), y)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        if batch_idx % 2 == 0:
            second.step()

    def configure_optimizers(self):
        return RAdam(self.hidden.parameters(), lr=1e-2), torch.optim.Adam(self.out.parameters(), lr=1e-3)


class PerScalarTensorBoardLogger(TensorBoardLogger):
    """A TensorBoardLogger with a log_metrics of its own, as a user's may have: the monitors call it."""

    def log_metrics(self, metrics, step=None):
        super().log_metrics(metrics, step)


def raw_events(log_dir):
    """Every event of every event file of a run, in the order of the files and of their records."""
    return [
        e
        for path in sorted(Path(log_dir).glob("events.out.tfevents.*"))
        for e in LegacyEventFileLoader(str(path)).Load()
    ]


def scalar_events(log_dir):
    """``(step, sorted tags)`` of every event that holds scalars, from every event file of a run."""
    tags = [(e.step, sorted(v.tag for v in e.summary.value if v.HasField("simple_value"))) for e in raw_events(log_dir)]
    return [(step, names) for step, names in tags if names]


def test_monitors_write_the_scalars_of_a_step_as_one_event_read_as_log_metrics_writes_them(tmp_path):
    log_dirs = {}
    for kind in (TensorBoardLogger, PerScalarTensorBoardLogger):
        logger = kind(tmp_path / kind.__name__, name="", version=0, default_hp_metric=False)
        model = Model(gradients=known_gradients(finite_only=True), make_optimizer=lambda p: RAdam(p, lr=0.0))
        make_trainer(tmp_path, both(), max_steps=3, logger=logger).fit(model)
        log_dirs[kind] = logger.log_dir
    one_event, per_scalar = (scalar_events(log_dirs[kind]) for kind in log_dirs)
    assert all(len(tags) == 1 for _, tags in per_scalar)  # log_metrics: one event per scalar
    for step in range(3):  # ours: one event per monitor and step, holding every scalar of that step
        for family in ("radam/", "grad/"):
            events = [tags for s, tags in one_event if s == step and tags[0].startswith(family)]
            assert events == [sorted(tags[0] for s, tags in per_scalar if s == step and tags[0].startswith(family))]
    assert event_log(log_dirs[TensorBoardLogger]) == event_log(log_dirs[PerScalarTensorBoardLogger])
    # and a histogram step's histograms travel in the event of its scalars (log_metrics' loggers: add_histogram_raw)
    histograms = [
        (
            e.step,
            sorted(v.tag for v in e.summary.value if v.HasField("histo")),
            any(v.HasField("simple_value") for v in e.summary.value),
        )
        for e in raw_events(log_dirs[TensorBoardLogger])
        if any(v.HasField("histo") for v in e.summary.value)
    ]
    assert histograms == [(step, ["grad/log10_abs", "grad/log10_abs/early"], True) for step in range(3)]


def test_monitor_scalars_reach_a_prefixed_or_closed_tensorboard_logger(tmp_path):
    prefixed = TensorBoardLogger(tmp_path, name="prefixed", version=0, prefix="run")
    closed = TensorBoardLogger(tmp_path, name="closed", version=0)
    closed.experiment.close()  # as after a fit: a new event file is opened, as log_metrics would
    trainer = make_trainer(tmp_path, [], logger=[prefixed, closed])
    _log_scalars(trainer, {"a": 1.5, "b": 2.5}, 7)
    _log_scalars(trainer, {"a": 3.5, "b": 4.5}, 8)
    for logger in (prefixed, closed):
        logger.finalize("success")
    assert event_log(prefixed.log_dir)["scalars"] == {"run-a": [(7, 1.5), (8, 3.5)], "run-b": [(7, 2.5), (8, 4.5)]}
    assert scalar_events(prefixed.log_dir) == [(7, ["run-a"]), (7, ["run-b"]), (8, ["run-a"]), (8, ["run-b"])]
    assert event_log(closed.log_dir)["scalars"] == {"a": [(7, 1.5), (8, 3.5)], "b": [(7, 2.5), (8, 4.5)]}
    assert scalar_events(closed.log_dir) == [(7, ["a", "b"]), (8, ["a", "b"])]


def test_monitor_events_are_written_in_the_training_thread_in_order(tmp_path):
    """Through TensorBoard's writer: after the records its thread was given, without a hand-over to that thread."""
    writer = SummaryWriter(str(tmp_path))
    file_writer = writer._get_file_writer()
    queue = file_writer.event_writer._async_writer._byte_queue
    queued = []
    put = queue.put
    queue.put = lambda item, *args, **kwargs: (queued.append(item), put(item, *args, **kwargs))
    for step in range(3):
        writer.add_scalar("queued", float(step), step)  # through the writer's thread
        _add_summary(file_writer, Summary(value=[Summary.Value(tag="ours", simple_value=float(step))]), step)
    assert len(queued) == 3  # ours never went through the queue
    assert file_writer.event_writer._async_writer._writer._writer in _APPENDERS  # through a descriptor kept open
    writer.close()
    records = [(e.step, e.summary.value[0].tag) for e in raw_events(tmp_path) if e.summary.value]
    assert records == [(step, tag) for step in range(3) for tag in ("queued", "ours")]
    with pytest.raises(IOError, match="closed"):  # as add_summary on a closed writer
        _add_summary(file_writer, Summary(), 3)


def _framed(*records: bytes) -> bytes:
    framed = io.BytesIO()
    for data in records:
        RecordWriter(framed).write(data)
    return framed.getvalue()


def _gfile(path: Path, started: bool = True, closed: bool = False) -> GFile:
    file = GFile(str(path), "wb")
    if started:
        file.write(b"first")
    if closed:
        file.close()
    return file


@pytest.mark.parametrize(
    ("make_file", "kept_open"),
    [
        (lambda path: _gfile(path), True),  # TensorBoard's own GFile, local, its first record written
        (lambda path: _gfile(path, started=False), False),  # its first write truncates the file: left to it
        (lambda path: _gfile(path, closed=True), False),
        (lambda path: io.BytesIO(), False),  # any other file-like object (TensorFlow's GFile, say)
    ],
)
def test_records_are_appended_through_a_descriptor_only_to_tensorboards_local_gfile(tmp_path, make_file, kept_open):
    record_writer = RecordWriter(make_file(tmp_path / "events"))
    appending = _appending_writer(record_writer)
    assert (appending is not record_writer) == kept_open
    if kept_open:
        appending.write(b"ours")
        record_writer.write(b"theirs")  # the GFile's own append, after ours
        appending.write(b"ours again")
        assert (tmp_path / "events").read_bytes() == b"first" + _framed(b"ours", b"theirs", b"ours again")
        assert _appending_writer(record_writer) is appending  # one descriptor per file
        record_writer._writer.close()
        assert _appending_writer(record_writer) is record_writer  # which raises on a closed GFile, as it should


def test_records_after_the_event_file_is_deleted_go_to_the_file_made_again(tmp_path):
    path = tmp_path / "events"
    record_writer = RecordWriter(_gfile(path))
    _appending_writer(record_writer).write(b"ours")
    path.unlink()  # a user clears the log directory during the run
    _appending_writer(record_writer).write(b"ours, after")  # through the GFile, which makes the file again
    record_writer.write(b"theirs")
    appending = _appending_writer(record_writer)
    assert appending is not record_writer  # a descriptor of the new file
    appending.write(b"ours again")
    assert path.read_bytes() == _framed(b"ours, after", b"theirs", b"ours again")


def test_monitors_with_two_optimizers_and_manual_optimization(tmp_path):
    trainer = make_trainer(tmp_path, both(layers=r"weight"), max_steps=10)  # 10 optimizer steps: 7 batches
    trainer.fit(TwoOptimizerModel())
    events = read_events(trainer.logger.log_dir)
    assert scalar_series(events, "radam/optimizer0/group0/step") == (list(range(7)), pytest.approx(list(range(1, 8))))
    assert scalar_series(events, "radam/optimizer1/group0/step") == ([0, 2, 4, 6], pytest.approx([1, 2, 3, 4]))
    assert [h.step for h in events.Histograms("grad/optimizer0/log10_abs")] == list(range(7))
    assert [h.step for h in events.Histograms("grad/optimizer1/log10_abs")] == [0, 2, 4, 6]
    assert sorted(tag for tag in events.Tags()["histograms"] if "/layer/" in tag) == [
        "grad/layer/hidden.weight/log10_abs",
        "grad/layer/out.weight/log10_abs",
    ]


def written_layout(events) -> dict[str, dict[str, list[str]]]:
    layout = layout_pb2.Layout()
    layout.ParseFromString(events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    return {c.title: {chart.title: list(chart.multiline.tag) for chart in c.chart} for c in layout.category}


def layout_tags(layout: dict) -> dict[str, dict[str, list[str]]]:
    """A :func:`monitoring_layout` as :func:`written_layout` reads it back: each chart's tag regexes."""
    return {category: {chart: tags for chart, (_, tags) in charts.items()} for category, charts in layout.items()}


@pytest.mark.parametrize("prefix", ["", "run"])
def test_rectification_monitor_writes_layout_matching_the_logged_tags(tmp_path, prefix):
    """Also under a TensorBoardLogger's prefix, which log_metrics puts before the scalars' names: the monitors put
    it before their histograms, the picture and the layout's tags too."""
    logger = TensorBoardLogger(tmp_path, name="", version=0, prefix=prefix)
    monitors = [RectificationMonitor(layers="weight"), GradientHistogramMonitor(early_steps=7)]
    trainer = make_trainer(tmp_path, monitors, max_steps=7, logger=logger)
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    start = f"{prefix}-" if prefix else ""
    tags = events.Tags()
    assert sorted(tags["histograms"]) == [start + "grad/log10_abs", start + "grad/log10_abs/early"]
    assert tags["images"] == [start + "grad/log10_abs/stacked"]
    assert {start + "radam/group0/r_t", start + "grad/zeros", start + "loss"} <= set(tags["scalars"])
    written = written_layout(events)
    expected = monitoring_layout(layers=True, gradient_prefixes=["grad"], tag_prefix=start)  # the run's charts only
    assert written == layout_tags(expected)
    scalars = events.Tags()["scalars"]
    patterns = [pattern for charts in written.values() for chart in charts.values() for pattern in chart]
    for pattern in patterns:  # every regex selects logged tags, matched as TensorBoard does
        assert any(re.match(pattern, tag) for tag in scalars), pattern
    # each chart selects only its own quantity: the r_t chart, say, shows no rho_t curve
    for pattern in patterns:
        quantity = re.search(r"(\w+)\$$", pattern).group(1)
        assert all(tag.endswith("/" + quantity) for tag in scalars if re.match(pattern, tag)), pattern


@pytest.mark.parametrize(
    ("callback", "kwargs", "error", "match"),
    [
        (RectificationMonitor, {"every_n_steps": 0}, ValueError, "Invalid every_n_steps: 0"),
        (RectificationMonitor, {"every_n_steps": 1.5}, TypeError, "Invalid every_n_steps"),
        (RectificationMonitor, {"threshold": 3.9}, ValueError, "Invalid threshold: 3.9"),
        (RectificationMonitor, {"threshold": float("nan")}, ValueError, "Invalid threshold: nan"),
        (RectificationMonitor, {"threshold": "5"}, TypeError, "Invalid threshold"),
        (RectificationMonitor, {"layers": "("}, ValueError, r"Invalid layers: '\('"),
        (RectificationMonitor, {"layers": 3}, TypeError, "Invalid layers"),
        (RectificationMonitor, {"write_layout": 1}, TypeError, "Invalid write_layout"),
        (GradientHistogramMonitor, {"every_n_steps": -2}, ValueError, "Invalid every_n_steps: -2"),
        (GradientHistogramMonitor, {"every_n_steps": True}, TypeError, "Invalid every_n_steps"),
        (GradientHistogramMonitor, {"layer_every_n_steps": 0}, ValueError, "Invalid layer_every_n_steps: 0"),
        (GradientHistogramMonitor, {"early_steps": -1}, ValueError, "Invalid early_steps: -1"),
        (GradientHistogramMonitor, {"on_distortion": "raise"}, ValueError, "Invalid on_distortion: 'raise'"),
        (GradientHistogramMonitor, {"distortion_threshold": 0}, ValueError, "Invalid distortion_threshold: 0"),
        (GradientHistogramMonitor, {"distortion_threshold": float("inf")}, ValueError, "Invalid distortion_threshold"),
        (GradientHistogramMonitor, {"distortion_threshold": "3"}, TypeError, "Invalid distortion_threshold"),
        (GradientHistogramMonitor, {"distortion_steps": 0}, ValueError, "Invalid distortion_steps: 0"),
        (GradientHistogramMonitor, {"distortion_steps": 30.0}, TypeError, "Invalid distortion_steps"),
        (RectificationMonitor, {"early_steps": 2.0}, TypeError, "Invalid early_steps: expected an int, got 2.0"),
        (RectificationMonitor, {"every_n_steps": None, "early_steps": None}, TypeError, "Invalid early_steps"),
        (GradientHistogramMonitor, {"when": "after_step"}, ValueError, "Invalid when: 'after_step'"),
        (GradientHistogramMonitor, {"when": None}, TypeError, r"Invalid when: expected one of \('before_clip'"),
        (GradientHistogramMonitor, {"on_distortion": True}, TypeError, "Invalid on_distortion: expected one of"),
        (GradientHistogramMonitor, {"prefix": ""}, ValueError, "Invalid prefix: ''"),
        (GradientHistogramMonitor, {"prefix": "grad/"}, ValueError, "Invalid prefix: 'grad/'"),
        (GradientHistogramMonitor, {"prefix": "grad//clipped"}, ValueError, "Invalid prefix: 'grad//clipped'"),
        (GradientHistogramMonitor, {"prefix": "/grad"}, ValueError, "Invalid prefix: '/grad'"),
        (GradientHistogramMonitor, {"layers": "[a-"}, ValueError, r"Invalid layers: '\[a-'"),
        (GradientHistogramMonitor, {"subsample": 0}, ValueError, "Invalid subsample: 0"),
    ],
)
def test_monitors_reject_bad_arguments(callback, kwargs, error, match):
    with pytest.raises(error, match=match):
        callback(**kwargs)


@pytest.mark.parametrize(
    ("callback", "kwargs"),
    [
        (RectificationMonitor, {"every_n_steps": np.int64(10), "early_steps": np.int32(0)}),
        (
            GradientHistogramMonitor,
            {"layer_every_n_steps": np.int64(5), "subsample": np.int64(2), "distortion_steps": np.int16(20)},
        ),
        (GradientHistogramMonitor, {"distortion_threshold": np.float32(2.5)}),
    ],
)
def test_monitors_take_numpy_numbers_as_python_ones(callback, kwargs):
    monitor = callback(**kwargs)  # as the optimizer does: checked, and stored as Python ints and floats
    for name, value in kwargs.items():
        stored = getattr(monitor, name)
        assert type(stored) is (int if isinstance(value, np.integer) else float)
        assert stored == value


@pytest.mark.parametrize("callback", [RectificationMonitor, GradientHistogramMonitor])
def test_monitors_need_a_logger(tmp_path, callback):
    trainer = make_trainer(tmp_path, [callback()], max_steps=1, logger=False)
    with pytest.raises(
        MisconfigurationException, match=f"Cannot use {callback.__name__} with a Trainer that has no logger"
    ):
        trainer.fit(Model())


def test_monitors_reused_in_a_new_trainer_log_again(tmp_path):
    monitors = both()
    for run in ("first", "second"):
        trainer = make_trainer(tmp_path / run, monitors, max_steps=3)
        trainer.fit(Model())
        events = read_events(trainer.logger.log_dir)
        assert scalar_series(events, "radam/group0/rho_t")[0] == [0, 1, 2], run
        assert [h.step for h in events.Histograms("grad/log10_abs")] == [0, 1, 2], run


def test_gradient_histogram_monitor_accepts_a_nested_prefix(tmp_path):
    trainer = make_trainer(tmp_path, [GradientHistogramMonitor(prefix="grad/clipped")], max_steps=2)
    trainer.fit(Model())
    assert "grad/clipped/zeros" in read_events(trainer.logger.log_dir).Tags()["scalars"]


@pytest.mark.parametrize(
    ("monitors", "match"),
    [
        pytest.param(
            lambda: [GradientHistogramMonitor(), GradientHistogramMonitor(when="after_clip")],
            re.escape(
                "GradientHistogramMonitor(prefix='grad', when='before_clip') and "
                "GradientHistogramMonitor(prefix='grad', when='after_clip') would both write the tags grad/"
            ),
            id="histogram_same_prefix",
        ),
    ],
)
def test_monitors_that_would_write_the_same_tags_are_rejected_at_setup(tmp_path, monitors, match):
    trainer = make_trainer(tmp_path, monitors(), max_steps=1)
    with pytest.raises(ValueError, match=match):
        trainer.fit(Model())


@pytest.mark.parametrize("callback", [RectificationMonitor, GradientHistogramMonitor])
def test_monitors_warn_once_when_layers_matches_no_parameter(tmp_path, callback):
    pattern = r"^attn\."
    trainer = make_trainer(tmp_path, [callback(layers=pattern)], max_steps=3)
    with pytest.warns(
        UserWarning, match=re.escape(f"{callback.__name__}: layers={pattern!r} matches no parameter")
    ) as record:
        trainer.fit(Model())
    assert sum("matches no parameter" in str(w.message) for w in record) == 1
    assert not [tag for tag in read_events(trainer.logger.log_dir).Tags()["scalars"] if "/layer/" in tag]


def test_layout_has_no_per_layer_charts_without_a_matching_layers(tmp_path):
    with pytest.warns(UserWarning, match="matches no parameter"):
        make_trainer(tmp_path, [RectificationMonitor(layers="attn")], max_steps=1).fit(Model())
    charts = [chart for charts in written_layout(read_events(tmp_path / "version_0")).values() for chart in charts]
    assert charts == list(monitoring_layout(gradient_prefixes=())["RAdam rectification"])  # no gradient charts either


def test_layout_has_no_rectification_charts_without_an_adam_like_optimizer(tmp_path):
    monitors = [RectificationMonitor(layers="weight"), GradientHistogramMonitor()]
    trainer = make_trainer(tmp_path, monitors, max_steps=2)
    with pytest.warns(UserWarning, match=r"optimizer 0 \(SGD\) has no betas/second moment; it is not monitored"):
        trainer.fit(Model(make_optimizer=lambda params: torch.optim.SGD(params, lr=0.1)))
    assert written_layout(read_events(trainer.logger.log_dir)) == layout_tags(monitoring_layout(rectification=False))


def test_two_histogram_monitors_after_clipping_log_side_by_side(tmp_path):
    """Each registers a step post-hook on logged steps: none is removed while torch loops over the hooks."""
    monitors = [
        GradientHistogramMonitor(when="after_clip", prefix="clipped"),
        GradientHistogramMonitor(when="after_clip", prefix="clipped_layers", layers="weight"),
    ]
    trainer = make_trainer(tmp_path, monitors, max_steps=3, gradient_clip_val=0.01)
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    first, second = (events.Histograms(f"{prefix}/log10_abs") for prefix in ("clipped", "clipped_layers"))
    assert [h.step for h in first] == [h.step for h in second] == [0, 1, 2]
    assert [h.histogram_value for h in first] == [h.histogram_value for h in second]
    assert max(h.histogram_value.max for h in first) <= -2.0  # log10 of the clipping norm bounds every element


class Evaluated(Model):
    """Model with the hooks of trainer.validate, test and predict."""

    def validation_step(self, batch, batch_idx):
        return None

    def test_step(self, batch, batch_idx):
        return None

    def predict_step(self, batch, batch_idx):
        return None

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)

    test_dataloader = predict_dataloader = val_dataloader


@pytest.mark.parametrize("stage", ["validate", "test", "predict"])
def test_evaluating_after_a_fit_keeps_the_monitors_state(tmp_path, stage):
    monitors = [RectificationMonitor(), GradientHistogramMonitor(distortion_threshold=2.0)]
    model = Evaluated(
        lambda params: RAdam(params, lr=0.0), gradients={"w": torch.logspace(-4, 0, 50)}, decades_per_step=1.0
    )
    trainer = make_trainer(tmp_path, monitors, max_steps=4, limit_val_batches=0)
    with pytest.warns(UserWarning, match="Early distortion"):
        trainer.fit(model)
    before = [repr(monitor.state_dict()) for monitor in monitors]
    fired = monitors[1].alarm_step
    assert fired is not None
    getattr(trainer, stage)(model)
    assert [repr(monitor.state_dict()) for monitor in monitors] == before
    assert monitors[1].alarm_step == fired


def test_monitors_reused_after_a_fit_that_raised_in_a_step_log_from_step_0(tmp_path):
    """A step that raised left the monitors' pending values and a step post-hook behind: a new fit forgets them."""
    monitors = [RectificationMonitor(), GradientHistogramMonitor(when="after_clip")]
    failing = Model(make_optimizer=lambda params: RAdam(params, lr=1e-2, nonfinite_grad="raise"), inf_at_step=2)
    with pytest.raises(RuntimeError, match="non-finite gradient"):
        make_trainer(tmp_path / "first", monitors, max_steps=4).fit(failing)
    trainer = make_trainer(tmp_path / "second", monitors, max_steps=3)
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    assert scalar_series(events, "radam/group0/skipped") == ([0, 1, 2], pytest.approx([0.0, 0.0, 0.0]))
    assert scalar_series(events, "radam/group0/step") == ([0, 1, 2], pytest.approx([1.0, 2.0, 3.0]))
    assert [h.step for h in events.Histograms("grad/log10_abs")] == [0, 1, 2]


def test_monitors_warn_when_their_schedule_logs_no_step(tmp_path):
    trainer = make_trainer(tmp_path, [RectificationMonitor(early_steps=0)], max_steps=2, log_every_n_steps=0)
    with pytest.warns(
        UserWarning,
        match=re.escape("RectificationMonitor(every_n_steps=None, early_steps=0, layers=None) logs no step"),
    ):
        trainer.fit(Model())
