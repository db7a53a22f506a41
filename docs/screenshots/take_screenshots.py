"""Screenshots of a real TensorBoard over the warmup study, for the README and docs/monitoring.md.

Not part of ``make test``. It needs Chromium and its WebDriver (Debian: ``apt-get install chromium
chromium-driver``) and the ``screenshots`` extra (``pip install -e ".[screenshots,examples]"``: selenium,
Pillow; the study needs the examples extra). Nothing is downloaded: the browser and driver are the
local binaries.

What it does:

1. runs ``examples/warmup_study.py --methods adam adam_warmup radam --seeds 0`` into ``--study-dir``
   (default: ``runs/warmup_study`` in a temporary directory, removed at the end, so the dashboards
   show the path the study's users see; ``--reuse`` skips training when ``--study-dir`` already holds
   the three runs);
2. starts ``python -m tensorboard.main --logdir <study-dir>/tensorboard --port <free> --host 127.0.0.1``
   with TensorBoard's default flags otherwise, and waits until its HTTP routes serve every run and
   the tag lists stop changing;
3. reads which tags the runs logged (``/data/plugin/{histograms,scalars,images}/tags``) and plans one
   screenshot per view: Histograms (the early-phase tag ``grad/log10_abs/early`` in offset mode, or
   ``grad/log10_abs`` where a run has no early tag; Adam and Adam with warmup, their charts expanded
   side by side), Time Series, Distributions, Images (the stacked picture of Adam and Adam with
   warmup at their actual size), Custom Scalars (the "RAdam rectification" category, then the
   "RAdam gradients" category with the first one collapsed), and Scalars filtered to the quantile
   and distortion scalars;
4. opens each view in headless Chromium driven by selenium, its viewport 1440 x 900 CSS pixels
   (wider where a view puts two large charts side by side; a fresh page per view, tag and run
   filters through the URL, clicks where a view needs them: offset mode, expanding charts, actual
   image size, closing Time Series' settings pane, collapsing a category), polls the page until
   every chart in view is drawn, no loading indicator shows and the number of drawn marks has
   stopped changing, then saves the viewport cropped to the dashboard's first section(s) as a
   256-colour PNG in ``--screenshots-dir`` (default: this directory).

A view whose tags are not logged (yet) is still captured, with a warning naming the missing tag.
The exit status is 1 if a view never finished drawing (its screenshot is then not written).

Example:
    python docs/screenshots/take_screenshots.py
    python docs/screenshots/take_screenshots.py --study-dir runs/screens --reuse --only histograms images
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "examples" / "warmup_study.py"
METHODS = ("adam", "adam_warmup", "radam")
RUNS = tuple(f"{method}/seed0" for method in METHODS)
PAIR = "^(adam|adam_warmup)/"  # run filter of the views that put Adam beside Adam with warmup, large
PREFIX = "grad"  # GradientHistogramMonitor's default prefix, as the study uses it
MARGIN = (16, 6)  # pixels kept right of and below what a screenshot keeps
DEFAULT_STUDY_DIR = Path("runs", "warmup_study")  # the study's own default, so TensorBoard shows the path users see
SHOTS = (  # plan()'s, in order
    "histograms",
    "time_series",
    "distributions",
    "images",
    "custom_scalars",
    "custom_scalars_gradients",
    "quantiles",
)

# JavaScript run in the page. TensorBoard's older dashboards live in shadow DOM, so every query walks
# the shadow roots too.
DEEP_QUERY = """
function deep(root, selector, out) {
  out.push(...root.querySelectorAll(selector));
  if (root.shadowRoot) deep(root.shadowRoot, selector, out);
  for (const element of root.querySelectorAll('*')) if (element.shadowRoot) deep(element.shadowRoot, selector, out);
  return out;
}
function inView(element) {
  const r = element.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top < window.innerHeight && r.bottom > 0;
}
"""
# [charts in view, of which drawn, drawn marks (SVG paths with data, loaded images), loading indicators in view]
DRAWN = (
    DEEP_QUERY
    + """
const charts = deep(document, arguments[0], []).filter(inView);
let drawn = 0, marks = 0;
for (const chart of charts) {
  const paths = deep(chart, 'path', []).filter(p => (p.getAttribute('d') || '').length > 8).length;
  const images = deep(chart, 'img', []).filter(i => i.complete && i.naturalWidth > 0).length;
  const canvases = deep(chart, 'canvas', []).filter(c => c.width > 0 && c.height > 0).length;
  if (paths + images + canvases > 0) drawn += 1;
  marks += paths + images;
}
const busy = deep(document, 'paper-spinner-lite[active], mat-spinner, mat-progress-spinner, mat-progress-bar', [])
  .filter(inView).length;
return [charts.length, drawn, marks, busy];
"""
)
# [right, bottom] (CSS pixels) of what a screenshot keeps: the first arguments[1] sections that match arguments[0],
# as wide as their charts (arguments[2]) and the row of tabs; null where no section is in view
CROP = (
    DEEP_QUERY
    + """
const sections = deep(document, arguments[0], []).filter(inView).slice(0, arguments[1]);
if (!sections.length) return null;
const bottom = Math.max(...sections.map(e => e.getBoundingClientRect().bottom));
const kept = [...deep(document, arguments[2], []), ...deep(document, '.mdc-tab', [])]
  .filter(inView).filter(e => e.getBoundingClientRect().top < bottom);
return [Math.max(...kept.map(e => e.getBoundingClientRect().right)), bottom];
"""
)
FIND_ONE = DEEP_QUERY + "return deep(document, arguments[0], []).filter(inView)[0] || null;"
# the elements that match arguments[1] inside the first section in view that matches arguments[0], in document order
FIND_IN_SECTION = (
    DEEP_QUERY
    + """
const section = deep(document, arguments[0], []).filter(inView)[0];
return section ? deep(section, arguments[1], []) : [];
"""
)


@dataclass(frozen=True)
class Shot:
    """One screenshot: the page to open, what to click, what must be drawn, where to crop.

    Attributes:
        name: file name without ``.png``.
        path: URL path after the server's address (query and ``#dashboard&tagFilter=...&regexInput=...``).
        page: CSS selector of the dashboard's element, in view once the tab is open.
        charts: CSS selector of the chart elements that must be drawn.
        crop: CSS selector of the section to keep; the image is cut below the first ``crop_count`` of them.
        crop_count: how many of the ``crop`` elements in view to keep.
        click: CSS selectors clicked in order once the page is loaded, the first element in view of each (e.g. a
            mode button, a pane's close button).
        click_in_section: CSS selectors clicked next, every match inside the first ``crop`` section, last first
            (so that a chart that grows does not move those still to be clicked), e.g. the charts' expand buttons.
        width: the viewport's width in CSS pixels for this view, at least ``--width`` (None: ``--width``).
        missing: tags the view is meant to show that no run logged (reported; the view is captured anyway).
        empty: nothing to chart (no run logged any tag of the view): the page is captured without charts.
    """

    name: str
    path: str
    page: str
    charts: str
    crop: str
    crop_count: int = 1
    click: tuple[str, ...] = ()
    click_in_section: tuple[str, ...] = ()
    width: int | None = None
    missing: tuple[str, ...] = ()
    empty: bool = False


# ------------------------------------------------------------------------------------------------ the study
def run_study(study_dir: Path, steps: int | None, reuse: bool) -> Path:
    """Train the three runs (unless ``reuse`` and they are there); return the TensorBoard log directory."""
    log_dir = study_dir / "tensorboard"
    if reuse and all(any((log_dir / run).glob("events.out.tfevents.*")) for run in RUNS):
        print(f"reusing the runs in {log_dir}")
        return log_dir
    command = [sys.executable, str(STUDY), "--methods", *METHODS, "--seeds", "0", "--output-dir", str(study_dir)]
    if steps is not None:
        command += ["--steps", str(steps)]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)  # noqa: S603 (our own example script, with this interpreter)
    return log_dir


# ---------------------------------------------------------------------------------------------- TensorBoard
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(base: str, route: str, **query: str) -> Any:
    url = f"{base}{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (http://127.0.0.1 only)
        return json.load(response)


def tag_lists(base: str) -> dict[str, dict[str, list[str]]]:
    """{plugin: {run: sorted tags}} for the plugins the shots use, as the web app reads them."""
    tags: dict[str, dict[str, list[str]]] = {}
    for plugin in ("histograms", "scalars", "images"):
        listing = get_json(base, f"/data/plugin/{plugin}/tags")  # {run: {tag: description}}
        tags[plugin] = {run: sorted(run_tags) for run, run_tags in listing.items()}
    return tags


@contextmanager
def tensorboard(log_dir: Path, cwd: Path, timeout: float) -> Iterator[tuple[str, dict[str, dict[str, list[str]]]]]:
    """A TensorBoard server with default flags on 127.0.0.1, run in ``cwd``: yields its address and tags once loaded.

    ``log_dir`` is passed relative to ``cwd`` where it lies below it: the dashboards show the path as passed.
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if log_dir.is_absolute() and log_dir.is_relative_to(cwd):
        log_dir = log_dir.relative_to(cwd)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--port", str(port)]
    with tempfile.TemporaryFile(mode="w+") as log:
        server = subprocess.Popen(  # noqa: S603 (this interpreter's TensorBoard)
            [*command, "--host", "127.0.0.1"], cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield base, wait_loaded(server, base, log, timeout)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def wait_loaded(
    server: subprocess.Popen[bytes], base: str, log: IO[str], timeout: float
) -> dict[str, dict[str, list[str]]]:
    """Poll the server until it lists every run and its tag lists did not change between two polls."""
    deadline, previous = time.monotonic() + timeout, None
    while True:
        if server.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"TensorBoard exited with status {server.returncode}:\n{log.read()[-2000:]}")
        try:
            tags = tag_lists(base)
        except (urllib.error.URLError, ConnectionError):
            tags = None
        if tags is not None and all(run in tags["scalars"] for run in RUNS) and tags == previous:
            print(f"TensorBoard at {base} serves {', '.join(RUNS)}")
            return tags
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard at {base} did not serve the runs {', '.join(RUNS)} within {timeout:.0f} s")
        previous = tags
        time.sleep(2.0)


# -------------------------------------------------------------------------------------------------- the plan
def logged(tags: dict[str, list[str]], pattern: str) -> list[str]:
    """The tags of any run that match ``pattern`` from start to end, sorted."""
    return sorted({tag for run_tags in tags.values() for tag in run_tags if re.fullmatch(pattern, tag)})


def tag_filter(*patterns: str) -> str:
    """A tag filter matching whole tags only (TensorBoard's tag filters search anywhere in the tag)."""
    return "^(" + "|".join(patterns) + ")$"


def dashboard(name: str, regex: str, runs: str = "") -> str:
    """The URL path of one of TensorBoard's tabbed dashboards, filtered by a tag regex (and a run regex, if given)."""
    path = f"#{name}&tagFilter={urllib.parse.quote(regex, safe='')}"
    return path + (f"&regexInput={urllib.parse.quote(runs, safe='')}" if runs else "")


def plan(tags: dict[str, dict[str, list[str]]]) -> list[Shot]:
    """The screenshots, from the tags the runs logged; a tag a view is meant to show that no run logged is reported."""
    histograms, scalars, images = tags["histograms"], tags["scalars"], tags["images"]
    main_tag, early_tag, stacked_tag = f"{PREFIX}/log10_abs", f"{PREFIX}/log10_abs/early", f"{PREFIX}/log10_abs/stacked"
    early = early_tag if logged(histograms, re.escape(early_tag)) else main_tag
    no_early = () if early == early_tag else (early_tag,)
    quantiles = rf"{re.escape(main_tag)}/p\d\d|{re.escape(PREFIX)}/distortion"
    no_quantiles = () if logged(scalars, quantiles) else (f"{main_tag}/p01 ... p99 and {PREFIX}/distortion",)
    stacked = stacked_tag if logged(images, re.escape(stacked_tag)) else ""  # "": every image
    section = "tf-category-paginated-view"  # one section (tag group) of the tabbed dashboards
    series = urllib.parse.quote(tag_filter(*dict.fromkeys(map(re.escape, (main_tag, early)))), safe="")
    return [
        Shot(
            "histograms",
            dashboard("histograms", tag_filter(re.escape(early)), runs=PAIR),
            page="tf-histogram-dashboard",
            charts="vz-histogram-timeseries",
            crop=section,
            click=("paper-button#offset",),
            click_in_section=("paper-icon-button[icon=fullscreen]",),  # expanded charts: 700 x 430 CSS pixels
            width=1840,  # two expanded charts side by side
            missing=no_early,
        ),
        Shot(
            "time_series",
            f"?tagFilter={series}#timeseries",
            page="metrics-dashboard",
            charts="histogram-card-component",
            crop="card-view",
            crop_count=6,
            click=('button[aria-label="Close side pane"]',),
            missing=no_early,
        ),
        Shot(
            "distributions",
            dashboard("distributions", tag_filter(re.escape(main_tag))),
            page="tf-distribution-dashboard",
            charts="vz-distribution-chart",
            crop=section,
        ),
        Shot(
            "images",
            dashboard("images", tag_filter(re.escape(stacked)) if stacked else "", runs=PAIR),
            page="tf-image-dashboard",
            charts="tf-image-loader",
            crop=section,
            click=(".line-item > paper-checkbox",),  # "Show actual image size" (640 x 400 pixels)
            width=1760,  # two pictures side by side at their actual size
            missing=() if stacked else (f"{stacked_tag} (any image is shown instead)",),
            empty=not logged(images, ".*"),
        ),
        Shot("custom_scalars", "#custom_scalars", "tf-custom-scalar-dashboard", charts="vz-line-chart2", crop=section),
        Shot(
            "custom_scalars_gradients",
            "#custom_scalars",
            "tf-custom-scalar-dashboard",
            charts="vz-line-chart2",
            crop=section,
            crop_count=2,
            click=("button.heading[open-button]",),  # collapses the first category, "RAdam rectification"
            missing=no_quantiles,
            empty=bool(no_quantiles),
        ),
        Shot(
            "quantiles",
            dashboard("scalars", tag_filter(quantiles)),
            page="tf-scalar-dashboard",
            charts="vz-line-chart2",
            crop=section,
            missing=no_quantiles,
            empty=bool(no_quantiles),
        ),
    ]


# ------------------------------------------------------------------------------------------------- the browser
@contextmanager
def chromium(binary: str, driver: str, width: int, height: int) -> Iterator[WebDriver]:
    """Headless Chromium through the local chromedriver, its viewport exactly ``width`` x ``height``."""
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(argument)  # --no-sandbox: Chromium refuses to start as root without it
    options.add_argument(f"--window-size={width},{height}")
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    try:
        set_viewport(browser, width, height)
        yield browser
    finally:
        browser.quit()


def set_viewport(browser: WebDriver, width: int, height: int) -> None:
    """The page's viewport: ``width`` x ``height`` CSS pixels, one device pixel each."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.25)
    return result


def find(browser: WebDriver, selector: str, timeout: float, shot: str) -> WebElement:
    """The first element in view that matches ``selector``, in the page or any shadow root, once there is one."""
    element = wait_until(lambda: browser.execute_script(FIND_ONE, selector), timeout, f"{shot}: {selector} in view")
    return cast(WebElement, element)


def find_in_section(browser: WebDriver, section: str, selector: str, timeout: float, shot: str) -> list[WebElement]:
    """Every element that matches ``selector`` inside the first ``section`` in view, once there is one."""
    elements = wait_until(
        lambda: browser.execute_script(FIND_IN_SECTION, section, selector), timeout, f"{shot}: {selector} in {section}"
    )
    return cast(list[WebElement], elements)


def wait_drawn(browser: WebDriver, shot: Shot, timeout: float) -> list[int]:
    """Poll until every chart in view is drawn, nothing is loading, and the drawn marks held still for 1.5 s."""
    history: list[list[int]] = []

    def settled() -> bool:
        history.append(browser.execute_script(DRAWN, shot.charts))
        charts, drawn, _, busy = history[-1]
        recent = history[-7:]
        still = len(recent) == 7 and all(poll == recent[0] for poll in recent)
        return still and busy == 0 and drawn == charts and (charts > 0 or shot.empty)

    try:
        wait_until(settled, timeout, f"{shot.name}: charts {shot.charts!r} drawn")
    except TimeoutError as error:
        last = history[-1] if history else None
        raise TimeoutError(f"{error} (last poll: [charts in view, drawn, marks, loading] = {last})") from None
    return history[-1]


def take(browser: WebDriver, base: str, shot: Shot, directory: Path, size: tuple[int, int], timeout: float) -> Path:
    """Open the view in a viewport of at least ``size``, click, wait for the charts, save the cropped, quantised PNG."""
    browser.get("about:blank")  # a fresh page: TensorBoard keeps visited dashboards alive in one page
    set_viewport(browser, max(size[0], shot.width or 0), size[1])
    browser.get(base + "/" + shot.path)
    find(browser, shot.page, timeout, shot.name)
    for selector in shot.click:
        find(browser, selector, timeout, shot.name).click()
    for selector in shot.click_in_section:
        for element in reversed(find_in_section(browser, shot.crop, selector, timeout, shot.name)):
            element.click()
    browser.execute_script("window.scrollTo(0, 0)")  # a click scrolls its element into view
    charts, _, marks, _ = wait_drawn(browser, shot, timeout)
    crop = browser.execute_script(CROP, shot.crop, shot.crop_count, shot.charts)
    image = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    if crop is not None and not shot.empty:
        (right, bottom), (right_margin, bottom_margin) = crop, MARGIN
        width, height = (
            min(image.width, math.ceil(right) + right_margin),
            min(image.height, math.ceil(bottom) + bottom_margin),
        )
        image = image.crop((0, 0, width, height))
    path = directory / f"{shot.name}.png"
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {charts} charts, {marks} marks, "
          f"{image.width}x{image.height}, {path.stat().st_size // 1024} KiB")  # fmt: skip
    return path


# ------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    here = Path(__file__).resolve().parent
    parser.add_argument("--study-dir", default=None, help="where the study writes; None: a temporary directory")
    parser.add_argument("--reuse", action="store_true", help="skip training if --study-dir holds the three runs")
    parser.add_argument("--steps", type=int, default=None, help="the study's --steps; None: the study's default")
    parser.add_argument("--screenshots-dir", default=str(here), help="where the PNGs go")
    parser.add_argument(
        "--only", nargs="+", default=list(SHOTS), choices=SHOTS, metavar="NAME", help="any of %(choices)s"
    )
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium", help="the browser")
    parser.add_argument(
        "--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver", help="its driver"
    )
    parser.add_argument("--width", type=int, default=1440, help="viewport width in CSS pixels")
    parser.add_argument("--height", type=int, default=900, help="viewport height in CSS pixels")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for TensorBoard or one view")
    args = parser.parse_args(argv)
    for name in ("chromium", "chromedriver"):
        if not Path(getattr(args, name)).is_file():
            parser.error(f"--{name}: no such file {getattr(args, name)!r} (Debian: apt-get install chromium-driver)")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.width < 200 or args.height < 200:
        parser.error(f"--width and --height must be >= 200, got {args.width} x {args.height}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    screenshots_dir = Path(args.screenshots_dir)
    screenshots_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as scratch:
        study_dir = Path(args.study_dir).resolve() if args.study_dir else Path(scratch, DEFAULT_STUDY_DIR)
        log_dir = run_study(study_dir, args.steps, args.reuse)
        with tensorboard(log_dir, Path.cwd() if args.study_dir else Path(scratch), args.timeout) as (base, tags):
            failed = []
            with chromium(args.chromium, args.chromedriver, args.width, args.height) as browser:
                for shot in (shot for shot in plan(tags) if shot.name in args.only):
                    for tag in shot.missing:
                        print(f"warning: {shot.name}: no run logged {tag}; the view is captured without it")
                    try:
                        take(browser, base, shot, screenshots_dir, (args.width, args.height), args.timeout)
                    except TimeoutError as error:
                        print(f"error: {error}", file=sys.stderr)
                        failed.append(shot.name)
    if failed:
        print(f"not written: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
