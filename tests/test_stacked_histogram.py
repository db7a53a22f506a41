"""The stacked-histogram picture (Liu et al., Fig. 2): where the data lands in it, its PNG, its TensorBoard image.

The pictures are read as a user sees them: the plot is found by its frame (the two longest dark-grey rows and
columns), the colour scale by the colour bar to its right, text by its pixels; the x axis spans the steps (the last
one as wide as the gap before it) and the y axis the occupied bins plus ``margin`` decades, as documented.
"""

from __future__ import annotations

import io
import math
import struct
import zlib

import matplotlib.image
import numpy as np
import pytest
from helpers import read_events
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter

from lightning_radam.callbacks import bucket_edges, encode_png, image_summary, render_stacked_histogram
from lightning_radam.callbacks.stacked_histogram import _text_mask

WHITE = np.array([255, 255, 255])
LOG10_LOWER, LOG10_UPPER = np.log10(bucket_edges())  # the IEEE buckets; the last four (inf, NaN) are infinite
FINITE = np.isfinite(LOG10_LOWER)

# ------------------------------------------------------------------------------------------ reading the picture


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])


def ink(image: np.ndarray) -> np.ndarray:
    """Where the axes and text are: dark grey pixels (the colour map has no grey)."""
    r, g, b = (image[..., c].astype(int) for c in range(3))
    return (r == g) & (g == b) & (r < 100)


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)


def plot_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """Top, bottom, left, right of the inside of the plot's frame (bottom and right exclusive)."""
    dark = ink(image)
    rows = _runs(np.flatnonzero(dark.sum(axis=1) >= image.shape[1] // 2))
    assert len(rows) == 2, "a frame: two long horizontal lines"
    top, bottom = rows[0][-1] + 1, rows[1][0]
    cols = _runs(np.flatnonzero(dark[top:bottom].sum(axis=0) == bottom - top))
    assert len(cols) == 2, "a frame: two full vertical lines"
    return int(top), int(bottom), int(cols[0][-1] + 1), int(cols[1][0])


def colour_bar(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """The colour bar (the columns right of the plot coloured at every row): its middle column from top to bottom,
    and the first column right of it."""
    top, bottom, _, right = box
    inside = image[top:bottom, right:]
    coloured = np.all(~ink(inside) & np.any(inside != 255, axis=-1), axis=0)
    columns = np.flatnonzero(coloured)
    assert columns.size >= 8, "a colour bar right of the plot"
    return inside[:, columns[columns.size // 2]].astype(int), right + int(columns[-1]) + 1


def tick_marks(line: np.ndarray) -> list[int]:
    """The first pixel of each run of ink along a line of the ink mask."""
    return [int(run[0]) for run in _runs(np.flatnonzero(line)) if run.size]


def text_near(dark: np.ndarray, row: int, col: int, candidates: list[str], scale: int, align: str) -> list[str]:
    """The candidates drawn exactly, with blank pixels around them, within 4 font pixels of (row, col): the cap line
    and the text's left end, centre or right end (``align``). Reading the tick labels without knowing them; a match
    that is part of a longer one (a "1" in "10") is not counted."""
    found = set()
    for text in candidates:
        mask = np.pad(_text_mask(text, scale), scale)
        h, w = mask.shape
        x0 = col - scale - {"left": 0, "centre": (w - 2 * scale) // 2, "right": w - 2 * scale}[align]
        for dy in range(-4 * scale, 4 * scale + 1):
            for dx in range(-4 * scale, 4 * scale + 1):
                r, c = row - scale + dy, x0 + dx
                if r >= 0 and c >= 0 and np.array_equal(dark[r : r + h, c : c + w], mask):
                    found.add(text)
    return sorted(text for text in found if not any(text in other for other in found - {text}))  # "1" in "10"


def numbers_between(lo: float, hi: float) -> list[str]:
    """Every number in [lo, hi] with 0, 1 or 2 decimals, as a tick label writes it."""
    texts = set()
    for decimals in range(3):
        for k in range(math.ceil(lo * 10**decimals), math.floor(hi * 10**decimals) + 1):
            texts.add(f"{k / 10**decimals:.{decimals}f}" if k else "0")
    return sorted(texts)


def x_pixel(box: tuple, x: float, x_lo: float, x_hi: float) -> int:
    _, _, left, right = box
    return left + math.floor((x - x_lo) / (x_hi - x_lo) * (right - left))


def y_pixel(box: tuple, y: float, y_lo: float, y_hi: float) -> int:
    top, bottom, _, _ = box
    return top + math.floor((y_hi - y) / (y_hi - y_lo) * (bottom - top))


def decode_png(png: bytes) -> np.ndarray:
    """The pixels of an 8-bit RGB PNG whose rows are all unfiltered (filter type 0), checking every chunk's CRC."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + data)
        chunks[kind] = chunks.get(kind, b"") + data
        at += 12 + length
    width, height, depth, colour_type, compression, filters, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour_type, compression, filters, interlace) == (8, 2, 0, 0, 0)
    assert chunks[b"IEND"] == b""
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert np.all(rows[:, 0] == 0)
    return rows[:, 1:].reshape(height, width, 3)


def imread(png: bytes) -> np.ndarray:
    """The pixels as matplotlib reads them, as uint8 RGB."""
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    if pixels.dtype != np.uint8:
        pixels = np.rint(pixels * 255)
    return pixels[..., :3].astype(np.uint8)


# -------------------------------------------------------------------------------------------------------- data


def gaussian_counts(mean: float, sd: float, n: float = 1e6) -> np.ndarray:
    """Counts of n elements with log10|g| ~ N(mean, sd) in the IEEE buckets (rounded: far tails are empty)."""
    cdf = np.vectorize(lambda x: 0.5 * (1.0 + math.erf((x - mean) / (sd * math.sqrt(2.0)))))
    counts = np.zeros(LOG10_LOWER.size)
    counts[FINITE] = np.rint(n * (cdf(LOG10_UPPER[FINITE]) - cdf(LOG10_LOWER[FINITE])))
    return counts


def occupied_range(counts: np.ndarray, lower: np.ndarray, upper: np.ndarray, margin: float) -> tuple[float, float]:
    occupied = np.flatnonzero(counts.max(axis=0) > 0)
    return lower[occupied[0]] - margin, upper[occupied[-1]] + margin


COLLAPSE_STEPS = np.arange(11)
COLLAPSE_MEDIANS = -3.0 - 0.3 * COLLAPSE_STEPS  # the median of log10|g| falls 3 decades over 10 steps
COLLAPSE_SD = 0.4


def collapse_counts() -> np.ndarray:
    counts = np.array([gaussian_counts(m, COLLAPSE_SD) for m in COLLAPSE_MEDIANS])
    counts[:, ~FINITE] = [7, 0, 3, 1]  # inf and NaN elements: not part of the picture
    return counts


def render_collapse(**kwargs: object) -> np.ndarray:
    return render_stacked_histogram(COLLAPSE_STEPS, collapse_counts(), LOG10_LOWER, LOG10_UPPER, **kwargs)


# ------------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("width", "height", "title"),
    [
        (640, 400, "grad/log10_abs"),
        (320, 200, ""),
        (1280, 800, "grad/optimizer1/layer/hidden.weight/log10_abs"),
        (300, 500, "a title far too long to fit in the width of this picture, so it is cut short"),
    ],
)
def test_picture_shape_axes_title_and_colour_bar(width, height, title):
    image = render_collapse(width=width, height=height, title=title)
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    top, bottom, left, right = box = plot_box(image)
    assert right - left >= 0.55 * width  # the plot takes most of the picture
    assert bottom - top >= 0.55 * height
    dark = ink(image)
    assert dark[top:bottom, :left].sum() > 50, "y tick labels and the y label"
    assert dark[bottom:, left:right].sum() > 50, "x tick labels and the x label"
    scale = 1 if width < 1280 or height < 800 else 2  # font pixels per image pixel
    above = dark[: top - scale]  # the title, and the top of the highest y tick label beside the frame
    if not title:
        assert not above[:, left:right].any()
    else:  # the title's pixels, exactly: the first run of rows with ink; shortened with "..." to fit the width
        rows = _runs(np.flatnonzero(above.any(axis=1)))[0]
        cols = np.flatnonzero(above[rows].any(axis=0))
        drawn = above[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        room = (width - 12 * scale) // (6 * scale)  # 6 pixels from the edges, 6 per character
        mask = _text_mask(title if len(title) <= room else title[: room - 3] + "...", scale)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        np.testing.assert_array_equal(drawn, mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        assert (
            len(title) <= room
            or title == "a title far too long to fit in the width of this picture, so it is cut short"
        )
    bar, _ = colour_bar(image, box)
    assert len(bar) == bottom - top
    assert np.all(np.diff(luminance(bar)) <= 0.5), "the colour scale darkens monotonically from top to bottom"
    assert min(bar[0, :2]) > 200, "yellow at the top"
    assert bar[0, 2] < 100, "yellow at the top"
    assert luminance(bar[-1]) < 40, "dark purple at the bottom"
    assert bar[-1, 2] > bar[-1, 1], "dark purple at the bottom"


def test_collapse_appears_where_the_median_is():
    margin = 0.25
    image = render_collapse(margin=margin)
    box = top, bottom, left, right = plot_box(image)
    y_lo, y_hi = occupied_range(collapse_counts()[:, FINITE], LOG10_LOWER[FINITE], LOG10_UPPER[FINITE], margin)
    x_lo, x_hi = 0.0, 11.0  # the last step spans one step, as the gap before it
    row_per_decade = (bottom - top) / (y_hi - y_lo)
    bucket = float(np.max(LOG10_UPPER[FINITE] - LOG10_LOWER[FINITE]))
    for step, median in zip(COLLAPSE_STEPS, COLLAPSE_MEDIANS, strict=True):
        column = image[top:bottom, x_pixel(box, step + 0.5, x_lo, x_hi)]
        brightness = np.where(np.all(column == WHITE, axis=-1), -1.0, luminance(column))
        brightest = top + int(np.argmax(brightness))
        assert abs(brightest - y_pixel(box, median, y_lo, y_hi)) <= bucket * row_per_decade + 1, step
        # three standard deviations out, still drawn but darker; nine out (towards the middle of the axis), nothing
        inwards = 1.0 if median < COLLAPSE_MEDIANS.mean() else -1.0
        for offset, drawn in [(3 * COLLAPSE_SD, True), (-3 * COLLAPSE_SD, True), (9 * COLLAPSE_SD * inwards, False)]:
            pixel = image[y_pixel(box, median + offset, y_lo, y_hi), x_pixel(box, step + 0.5, x_lo, x_hi)]
            assert (not np.array_equal(pixel, WHITE)) == drawn, (step, offset)
            if drawn:
                assert luminance(pixel) < brightness.max() - 40, (step, offset)
    # where the first step's bulk was, the last step has nothing, and the other way round
    first, last = x_pixel(box, 0.5, x_lo, x_hi), x_pixel(box, 10.5, x_lo, x_hi)
    np.testing.assert_array_equal(image[y_pixel(box, COLLAPSE_MEDIANS[0], y_lo, y_hi), last], WHITE)
    np.testing.assert_array_equal(image[y_pixel(box, COLLAPSE_MEDIANS[-1], y_lo, y_hi), first], WHITE)


def test_nonfinite_bins_and_bins_outside_the_data_change_nothing():
    counts = collapse_counts()
    finite = render_stacked_histogram(COLLAPSE_STEPS, counts[:, FINITE], LOG10_LOWER[FINITE], LOG10_UPPER[FINITE])
    np.testing.assert_array_equal(render_collapse(), finite)
    occupied = np.flatnonzero(counts[:, FINITE].max(axis=0) > 0)
    cropped = slice(occupied[0], occupied[-1] + 1)
    np.testing.assert_array_equal(
        render_stacked_histogram(COLLAPSE_STEPS, counts[:, cropped], LOG10_LOWER[cropped], LOG10_UPPER[cropped]),
        finite,
    )


@pytest.mark.parametrize(
    ("steps", "empty_step"),
    [
        ([0, 1, 2, 3, 4, 10, 50, 100], None),  # a dense early phase, then a sparse one
        ([0, 1, 2, 3, 4, 10, 50, 100], 5),  # a step whose counts are all zero: its columns stay white
        ([5, 6, 200], None),  # not starting at 0
        ([0, 1000, 1001], None),
        ([7], None),  # one step: one step wide
    ],
)
def test_uneven_steps_each_fill_their_own_columns(steps, empty_step):
    edges = np.linspace(-8.0, 0.0, 41)  # 0.2 decades per bin
    counts = np.zeros((len(steps), 40))
    peak_bins = 4 + 4 * np.arange(len(steps))  # each step's elements all in one bin of its own
    counts[np.arange(len(steps)), peak_bins] = 1000.0
    if empty_step is not None:
        counts[empty_step] = 0.0
    image = render_stacked_histogram(steps, counts, edges[:-1], edges[1:], margin=0.5)
    box = top, bottom, left, right = plot_box(image)
    y_lo, y_hi = edges[peak_bins[0]] - 0.5, edges[peak_bins[-1] + 1] + 0.5
    ends = [*steps[1:], steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 1)]
    for i, (start, end) in enumerate(zip(steps, ends, strict=True)):
        first, last = x_pixel(box, start, steps[0], ends[-1]), x_pixel(box, end, steps[0], ends[-1]) - 1
        for column in range(first + 1, last):  # the columns inside the step's span (its edge columns are shared)
            coloured = np.flatnonzero(np.any(image[top:bottom, column] != 255, axis=-1)) + top
            if i == empty_step:
                assert coloured.size == 0, column
                continue
            peak_top = y_pixel(box, edges[peak_bins[i] + 1], y_lo, y_hi)
            peak_bottom = y_pixel(box, edges[peak_bins[i]], y_lo, y_hi)
            assert coloured.size > 0, (i, column)
            assert coloured.min() >= peak_top - 1, (i, column)
            assert coloured.max() <= peak_bottom, (i, column)
    assert right - left > 100


@pytest.mark.parametrize("decades", [2.0, 4.0, 6.0])
def test_colour_is_the_fraction_per_decade_on_a_log_scale(decades):
    edges = np.linspace(-6.0, 0.0, 31)  # 0.2 decades per bin
    fractions = np.array([0.9, 0.09, 9e-3, 9e-4, 9e-5, 9e-6])
    counts = np.zeros((1, 30))
    counts[0, 2 + 5 * np.arange(6)] = fractions * 1e7  # one bin per fraction
    image = render_stacked_histogram([0], counts, edges[:-1], edges[1:], margin=0.0, decades=decades)
    box = top, bottom, left, right = plot_box(image)
    bar, bar_end = colour_bar(image, box)
    density = fractions / fractions.sum() / 0.2  # fraction per decade
    log_max = math.ceil(math.log10(density.max()))
    # the colour bar's labels: every decade of the scale, at its level
    dark = ink(image)
    decade_labels = {e: {0: "1", 1: "10", -1: "0.1"}.get(e, f"1e{e}") for e in range(-12, 4)}
    read = []
    for row in tick_marks(dark[top:bottom, bar_end]):
        found = text_near(dark, top + row - 3, bar_end + 7, list(decade_labels.values()), 1, "left")
        assert len(found) == 1, (row, found)
        exponent = next(e for e, text in decade_labels.items() if text == found[0])
        assert abs(row - (log_max - exponent) / decades * (bottom - top - 1)) <= 1, (exponent, row)
        read.append(exponent)
    assert read == list(range(log_max, math.ceil(log_max - decades) - 1, -1))
    column = (left + right) // 2
    for i, d in enumerate(density):
        middle = (edges[2 + 5 * i] + edges[3 + 5 * i]) / 2
        pixel = image[y_pixel(box, middle, *occupied_range(counts, edges[:-1], edges[1:], 0.0)), column].astype(int)
        position = min(1.0, (log_max - math.log10(d)) / decades)  # below the scale: its darkest colour
        expected = bar[round(position * (bottom - top - 1))]
        assert np.abs(pixel - expected).max() <= 3, (d, pixel, expected)


@pytest.mark.parametrize(
    "rgb",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((1, 1, 3), 255, np.uint8),
        np.random.default_rng(0).integers(0, 256, (3, 2, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (17, 31, 3), dtype=np.uint8),
        np.asfortranarray(np.random.default_rng(2).integers(0, 256, (5, 4, 3), dtype=np.uint8)),
        render_collapse(title="grad/log10_abs"),
    ],
    ids=["black", "white", "noise_3x2", "noise_17x31", "fortran_order", "picture"],
)
def test_png_decodes_to_the_same_pixels(rgb):
    png = encode_png(rgb)
    np.testing.assert_array_equal(decode_png(png), rgb)
    np.testing.assert_array_equal(imread(png), rgb)


@pytest.mark.parametrize("writer_kind", ["SummaryWriter", "TensorBoardLogger"])
def test_image_summary_shows_in_tensorboard_images(tmp_path, writer_kind):
    pictures = {3: render_collapse(title="grad/log10_abs"), 40: render_collapse(width=320, height=240)}
    if writer_kind == "SummaryWriter":
        writer = SummaryWriter(str(tmp_path))
    else:
        writer = TensorBoardLogger(tmp_path, name="", version=0).experiment
    for step, rgb in pictures.items():
        summary = image_summary("grad/picture", encode_png(rgb), height=rgb.shape[0], width=rgb.shape[1])
        writer.file_writer.add_summary(summary, step)
    writer.close()
    events = read_events(writer.log_dir)
    assert events.Tags()["images"] == ["grad/picture"]
    images = events.Images("grad/picture")
    assert [image.step for image in images] == list(pictures)
    for image, rgb in zip(images, pictures.values(), strict=True):
        assert (image.height, image.width) == rgb.shape[:2]
        np.testing.assert_array_equal(imread(image.encoded_image_string), rgb)


def test_empty_input_is_an_error_naming_steps():
    with pytest.raises(ValueError, match=r"Invalid steps: empty"):
        render_stacked_histogram([], np.zeros((0, 3)), np.arange(3.0), np.arange(1.0, 4.0))


GOOD = {"steps": [0, 1], "counts": np.ones((2, 3)), "lower": np.arange(3.0), "upper": np.arange(1.0, 4.0)}


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"steps": [0, 0]}, ValueError, r"Invalid steps: expected increasing steps, got 0 then 0"),
        ({"steps": [1, 0]}, ValueError, r"Invalid steps: expected increasing steps, got 1 then 0"),
        ({"steps": [0, 1.5]}, ValueError, r"Invalid steps: expected integers, got \[0\. +1\.5\]"),
        ({"steps": [[0, 1]]}, ValueError, r"Invalid steps: expected a 1-D array, got shape \(1, 2\)"),
        ({"steps": ["a", "b"]}, TypeError, r"Invalid steps: expected an array of real numbers"),
        ({"counts": np.ones(3)}, ValueError, r"Invalid counts: expected a 2-D array, got shape \(3,\)"),
        ({"counts": np.ones((3, 3))}, ValueError, r"Invalid counts: expected one row per step \(2\), got shape"),
        ({"counts": -np.ones((2, 3))}, ValueError, r"Invalid counts: expected finite counts >= 0"),
        ({"counts": np.full((2, 3), np.nan)}, ValueError, r"Invalid counts: expected finite counts >= 0"),
        ({"counts": np.zeros((2, 3))}, ValueError, r"Invalid counts: no bin with finite edges holds an element"),
        (
            {"counts": [[0, 0, 1], [0, 0, 1]], "upper": [1.0, 2.0, np.inf]},
            ValueError,
            r"Invalid counts: no bin with finite edges holds an element",
        ),
        ({"lower": np.arange(4.0)}, ValueError, r"Invalid lower: expected one edge per bin \(3\), got shape \(4,\)"),
        ({"upper": np.arange(2.0)}, ValueError, r"Invalid upper: expected one edge per bin \(3\), got shape \(2,\)"),
        ({"upper": [1.0, 1.0, 3.0]}, ValueError, r"Invalid upper: bin 1 has upper 1.0 <= lower 1.0"),
        ({"lower": [0.0, 0.5, 2.0]}, ValueError, r"Invalid lower: .*bin 1 starting at 0.5 below the end of bin 0"),
        ({"width": 40}, ValueError, r"Invalid width: 40 leaves no room for the plot"),
        ({"height": 30}, ValueError, r"Invalid height: 30 leaves no room for the plot"),
        ({"width": 0}, ValueError, r"Invalid width: 0 \(expected width >= 1\)"),
        ({"width": "640"}, TypeError, r"Invalid width: expected an int, got '640'"),
        ({"height": True}, TypeError, r"Invalid height: expected an int, got True"),
        ({"title": 7}, TypeError, r"Invalid title: expected a str, got 7"),
        ({"margin": -0.5}, ValueError, r"Invalid margin: -0.5"),
        ({"margin": math.nan}, ValueError, r"Invalid margin: nan"),
        ({"decades": 0}, ValueError, r"Invalid decades: 0"),
        ({"decades": math.inf}, ValueError, r"Invalid decades: inf"),
        ({"decades": "4"}, TypeError, r"Invalid decades: expected a number, got '4'"),
    ],
)
def test_bad_input_errors_name_the_argument(changes, error, message):
    with pytest.raises(error, match=message):
        render_stacked_histogram(**{**GOOD, **changes})


PNG = encode_png(np.zeros((2, 3, 3), np.uint8))


@pytest.mark.parametrize(
    ("function", "arguments", "error", "message"),
    [
        (
            encode_png,
            (np.zeros((2, 3, 3)),),
            TypeError,
            r"Invalid rgb: expected a uint8 NumPy array, got float64 ndarray",
        ),
        (encode_png, ([[[0, 0, 0]]],), TypeError, r"Invalid rgb: expected a uint8 NumPy array, got list"),
        (encode_png, (np.zeros((2, 3), np.uint8),), ValueError, r"Invalid rgb: .*got \(2, 3\)"),
        (encode_png, (np.zeros((2, 3, 4), np.uint8),), ValueError, r"Invalid rgb: .*got \(2, 3, 4\)"),
        (encode_png, (np.zeros((0, 3, 3), np.uint8),), ValueError, r"Invalid rgb: .*got \(0, 3, 3\)"),
        (image_summary, ("", PNG, 2, 3), ValueError, r"Invalid tag: ''"),
        (image_summary, (None, PNG, 2, 3), TypeError, r"Invalid tag: expected a str, got None"),
        (image_summary, ("t", bytearray(PNG), 2, 3), TypeError, r"Invalid png_bytes: expected bytes, got bytearray"),
        (image_summary, ("t", b"GIF89a" + PNG, 2, 3), ValueError, r"Invalid png_bytes: not a PNG file"),
        (image_summary, ("t", PNG, 3, 3), ValueError, r"Invalid height: 3, but the PNG is 3 x 2"),
        (image_summary, ("t", PNG, 2, 2), ValueError, r"Invalid width: 2, but the PNG is 3 x 2"),
        (image_summary, ("t", PNG, 2.0, 3), TypeError, r"Invalid height: expected an int, got 2.0"),
    ],
)
def test_png_and_summary_errors_name_the_argument(function, arguments, error, message):
    with pytest.raises(error, match=message):
        function(*arguments)


@pytest.mark.parametrize(
    ("steps", "width", "height"),
    [
        (COLLAPSE_STEPS, 640, 400),
        ([0, 1, 2, 3, 4, 10, 50, 100, 1000, 5000, 9000], 640, 400),
        (COLLAPSE_STEPS * 1000 + 123456, 1280, 800),
        (COLLAPSE_STEPS, 320, 200),
    ],
)
def test_tick_labels_read_the_values_at_their_ticks(steps, width, height):
    counts = collapse_counts()
    image = render_stacked_histogram(steps, counts, LOG10_LOWER, LOG10_UPPER, width=width, height=height)
    scale = 1 if width < 1280 or height < 800 else 2
    top, bottom, left, right = plot_box(image)
    dark = ink(image)
    x_lo, x_hi = steps[0], steps[-1] + steps[-1] - steps[-2]
    dx = (x_hi - x_lo) / (right - left)
    columns = [left - scale + c for c in tick_marks(dark[bottom + scale, left - scale : right + scale])]
    assert len(columns) >= 3
    for col in columns:  # below the frame: the step of the tick's column (one pixel either way)
        at = x_lo + (col - left) * dx
        found = text_near(
            dark,
            bottom + 6 * scale,
            col,
            [str(v) for v in range(math.ceil(at - dx), math.floor(at + 2 * dx) + 1)],
            scale,
            "centre",
        )
        assert len(found) == 1, (col, found)
    y_lo, y_hi = occupied_range(counts[:, FINITE], LOG10_LOWER[FINITE], LOG10_UPPER[FINITE], 0.25)
    dy = (y_hi - y_lo) / (bottom - top)
    rows = [top + r for r in tick_marks(dark[top:bottom, left - scale - 1])]
    assert len(rows) >= 3
    for row in rows:  # left of the frame: the log10|g| of the tick's row
        at = y_hi - (row - top) * dy
        found = text_near(
            dark, row - 3 * scale, left - 6 * scale, numbers_between(at - 2 * dy, at + dy), scale, "right"
        )
        assert len(found) == 1, (row, found)
