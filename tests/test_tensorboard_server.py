"""What TensorBoard itself serves of the monitors' output: a real server on 127.0.0.1 with default flags, queried
through the routes its web app uses (``/data/plugin/custom_scalars/layout`` and ``.../scalars?run=...&tag=<regex>``,
``/data/plugin/histograms/...``, ``/data/plugin/scalars/...``, ``/data/plugin/images/...``), so that sampling and every
chart's regexes (``re.match``, from the start of the tag) are TensorBoard's own."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import Model, make_trainer

from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

STARTUP_TIMEOUT = 90.0  # seconds for the server to answer and load the run
REQUEST_TIMEOUT = 10.0

PER_LAYER_CHARTS = {
    "adaptive learning rate per layer, log10",
    "spread of the adaptive learning rate per layer, std of log10",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_bytes(port: int, route: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=REQUEST_TIMEOUT) as response:
        return response.read()


def get_json(port: int, route: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return json.loads(get_bytes(port, route + query))


def chart_series(port: int, run: str, layout: dict) -> dict[tuple[str, str, str], dict[str, list]]:
    """For every (category, chart, regex) of the layout: what the scalars route returns, {tag: [points]}."""
    series = {}
    for category in layout["category"]:
        for chart in category["chart"]:
            for regex in chart["multiline"]["tag"]:
                answer = get_json(port, "/data/plugin/custom_scalars/scalars", run=run, tag=regex)
                assert answer["regex_valid"], regex
                series[category["title"], chart["title"], regex] = answer["tag_to_events"]
    return series


@contextlib.contextmanager
def tensorboard_server(logdir: Path) -> Iterator[int]:
    """A TensorBoard server on ``logdir`` with default flags, on 127.0.0.1: yields its port."""
    port = free_port()
    log_path = logdir.parent / f"{logdir.name}-tensorboard.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=REQUEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=REQUEST_TIMEOUT)
    assert server.returncode is not None


def poll(read: Callable[[], Any], ready: Callable[[Any], bool]) -> Any:
    """``read()`` until ``ready`` holds for what it returns (the server loads runs in the background), or time out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    answer = None
    while time.monotonic() < deadline:
        try:
            answer = read()
            if ready(answer):
                return answer
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not answering yet
        time.sleep(0.5)
    return answer


def serve_and_read(logdir: Path) -> tuple[dict, dict]:
    """The custom-scalars layout and every chart's data, once all of them have data."""
    with tensorboard_server(logdir) as port:
        layout = poll(lambda: get_json(port, "/data/plugin/custom_scalars/layout"), bool) or {}
        series = poll(
            lambda: chart_series(port, "version_0", layout) if layout else {},
            lambda series: all(payload and all(payload.values()) for payload in series.values()),
        )
        return layout, series or {}


@pytest.mark.parametrize(
    ("monitors", "per_layer"),
    [
        pytest.param(lambda: [RectificationMonitor(), GradientHistogramMonitor()], False, id="defaults"),
        pytest.param(
            lambda: [
                RectificationMonitor(layers="weight"),
                GradientHistogramMonitor(layers="weight"),
                GradientHistogramMonitor(when="after_clip", prefix="grad_clipped"),
            ],
            True,
            id="layers",
        ),
    ],
)
def test_every_custom_scalars_chart_shows_logged_tags(tmp_path, monitors, per_layer):
    trainer = make_trainer(tmp_path, monitors(), max_steps=8)  # RAdam (b2 = 0.98) rectifies from t = 6
    trainer.fit(Model())
    layout, series = serve_and_read(tmp_path)
    assert layout, "TensorBoard found no custom-scalars layout"
    charts = {chart["title"] for category in layout["category"] for chart in category["chart"]}
    assert (charts >= PER_LAYER_CHARTS) if per_layer else not (PER_LAYER_CHARTS & charts)
    for (category, chart, regex), payload in series.items():
        assert payload, f"{category} / {chart}: {regex} matches no logged tag in TensorBoard"
        assert all(payload.values()), f"{category} / {chart}: {regex} matches a tag without data"
    gradient_tags = {
        tag for (category, _, _), payload in series.items() if category == "RAdam gradients" for tag in payload
    }
    prefixes = {"grad", "grad_clipped"} if per_layer else {"grad"}
    assert {tag.split("/")[0] for tag in gradient_tags} == prefixes  # curves of each GradientHistogramMonitor
    # the variance chart, on TensorBoard's linear axis: log10 of the adaptive rate's variance falls, the rectified
    # one stays within a factor of about 3 (half a decade)
    variance = {
        regex: payload
        for (_, chart, regex), payload in series.items()
        if chart.startswith("log10 variance of the adaptive learning rate")
    }
    (adaptive,) = [next(iter(p.values())) for r, p in variance.items() if r.endswith("/var_adaptive_lr_log10$")]
    (rectified,) = [next(iter(p.values())) for r, p in variance.items() if r.endswith("/var_rectified_lr_log10$")]
    adaptive_values = np.array([point[2] for point in adaptive])  # [wall time, step, value]
    rectified_values = np.array([point[2] for point in rectified])
    assert np.all(np.diff(adaptive_values) < 0)
    assert np.ptp(rectified_values) < 0.5
    assert adaptive_values[0] - adaptive_values[-1] > np.ptp(rectified_values)


def test_what_the_dashboards_serve_of_the_gradient_monitor(tmp_path):
    """With default flags, through the web app's routes: the Histograms dashboard's 51-point sample of a 120-step run
    misses some of the first steps, the early tag serves each of them (issue 10, item 1); the quantile scalars come
    with every step (item 2); the Images tab serves the stacked histogram, the PNG written beside the events (item 3).
    """
    monitor = GradientHistogramMonitor(every_n_steps=1)  # 120 points in grad/log10_abs
    trainer = make_trainer(tmp_path, [monitor], max_steps=120)
    trainer.fit(Model())
    with tensorboard_server(tmp_path) as port:

        def read(plugin: str, route: str) -> dict[str, list]:
            tags = get_json(port, f"/data/plugin/{plugin}/tags").get("version_0", {})
            return {tag: get_json(port, f"/data/plugin/{plugin}/{route}", run="version_0", tag=tag) for tag in tags}

        histograms = poll(lambda: read("histograms", "histograms"), lambda h: len(h.get("grad/log10_abs", ())) == 51)
        scalars = poll(lambda: read("scalars", "scalars"), lambda s: len(s.get("grad/distortion", ())) == 120)
        images = poll(lambda: read("images", "images"), lambda i: len(i.get("grad/log10_abs/stacked", ())) == 2)
        pictures = [
            get_bytes(port, "/data/plugin/images/individualImage?" + image["query"])
            for image in images["grad/log10_abs/stacked"]
        ]
    served = {tag: [point[1] for point in points] for tag, points in histograms.items()}  # [wall time, step, buckets]
    assert set(served) == {"grad/log10_abs", "grad/log10_abs/early"}
    assert served["grad/log10_abs/early"] == list(range(50))
    assert len(served["grad/log10_abs"]) == 51  # TensorBoard's sample of 120: some early steps are not served
    assert not set(range(20)) <= set(served["grad/log10_abs"])
    for name in ("p01", "p10", "p50", "p90", "p99"):
        assert [point[1] for point in scalars[f"grad/log10_abs/{name}"]] == list(range(120))  # [wall time, step, value]
    levels = np.array(
        [[point[2] for point in scalars[f"grad/log10_abs/{name}"]] for name in ("p01", "p10", "p50", "p90", "p99")]
    )
    assert np.all(np.diff(levels, axis=0) > 0)  # quantiles in order at every step
    assert [image["step"] for image in images["grad/log10_abs/stacked"]] == [49, 119]
    for image, png in zip(images["grad/log10_abs/stacked"], pictures, strict=True):
        assert png == (tmp_path / "version_0" / f"grad_log10_abs_stacked_step{image['step']}.png").read_bytes()
