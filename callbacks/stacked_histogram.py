r"""The paper's Figure 2 as a picture: histograms of :math:`\log_{10}|g|` stacked over optimizer steps, in NumPy.

Liu et al. (2020, Fig. 2) show the distribution of gradient magnitudes at every iteration, stacked
along the training: without warmup, Adam's distribution is distorted in the first updates. These
functions draw that figure from bucket counts already on the host and hand it to TensorBoard's
Images tab, with nothing but NumPy and the standard library (no matplotlib, no PIL):

- :func:`render_stacked_histogram`: an RGB image, x the optimizer step, y :math:`\log_{10}|g|`,
  colour the fraction of the step's elements per decade of :math:`|g|` (viridis, log scale), with
  axes, tick labels and a title drawn in an embedded 5x7 bitmap font;
- :func:`encode_png`: that image as PNG bytes (zlib and struct);
- :func:`image_summary`: the PNG as a TensorBoard ``Summary`` for ``writer.file_writer.add_summary``.
"""

from __future__ import annotations

import math
import numbers
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary  # type: ignore[import-untyped]

from lightning_radam._checks import check_int, check_positive

from .distortion import occupied_span

__all__ = ["encode_png", "image_summary", "render_stacked_histogram"]

# ------------------------------------------------------------------------------------------------------- font

# Printable ASCII (" " to "~"), 5 x 9 pixels per glyph: 7 rows from the cap line to the baseline and 2 rows of
# descender. Each glyph is 9 rows of 2 hex digits, the 5 low bits of each from the left column to the right.
_FONT_HEX = (
    "0000000000000000000404040404000400000a0a000000000000000a0a1f0a1f0a0a0000040f140e051e040000181902040813030000"
    "0c12140815120d00000404000000000000000204080808040200000804020202040800000004150e15040000000004041f0404000000"
    "0000000000000602040000001f000000000000000000000c0c00000001020408100000000e11131519110e0000040c040404040e0000"
    "0e11010204081f00001f02040201110e000002060a121f020200001f101e0101110e00000608101e11110e00001f0102040808080000"
    "0e11110e11110e00000e11110f01020c0000000c0c000c0c000000000c0c000c0c08000002040810080402000000001f001f00000000"
    "0804020102040800000e11010204000400000e11010d15150e00000e11111f11111100001e11111e11111e00000e11101010110e0000"
    "1c12111111121c00001f10101e10101f00001f10101e10101000000e11101711110f00001111111f11111100000e04040404040e0000"
    "0702020202120c00001112141814121100001010101010101f0000111b151511111100001111191513111100000e11111111110e0000"
    "1e11111e10101000000e11111115120d00001e11111e14121100000f10100e01011e00001f04040404040400001111111111110e0000"
    "11111111110a0400001111111515150a000011110a040a1111000011110a0404040400001f01020408101f00000e08080808080e0000"
    "0010080402010000000e02020202020e0000040a11000000000000000000000000001f0008040000000000000000000e010f110f0000"
    "1010161911111e000000000e1010110e000001010d1311110f000000000e111f100e00000609081c080808000000000f1111110f010e"
    "10101619111111000004000c0404040e000002000602020202120c1010121418141200000c04040404040e000000001a151515150000"
    "00001619111111000000000e1111110e000000001e1111111e101000000f1111110f010100001619101010000000000f100e011e0000"
    "08081c0808090600000000111111130d000000001111110a0400000000111115150a00000000110a040a1100000000111111110f010e"
    "00001f0204081f0000020404080404020000040404040404040404080404020404080000000008150200000000"
)
_GLYPH_ROWS, _GLYPH_COLS, _CAP_ROWS = 9, 5, 7
_ADVANCE = _GLYPH_COLS + 1  # one column between characters
_GLYPHS = (
    (np.frombuffer(bytes.fromhex(_FONT_HEX), dtype=np.uint8).reshape(-1, _GLYPH_ROWS, 1) >> np.arange(4, -1, -1)) & 1
).astype(bool)  # (95, 9, 5), glyph i is chr(32 + i)


def _text_mask(text: str, scale: int) -> np.ndarray:
    """The pixels of ``text`` on one line, each font pixel ``scale`` x ``scale``; characters outside ASCII are '?'."""
    codes = np.array([ord(c) - 32 if " " <= c <= "~" else ord("?") - 32 for c in text], dtype=np.intp)
    if codes.size == 0:
        return np.zeros((_GLYPH_ROWS * scale, 0), dtype=bool)
    cells = np.pad(_GLYPHS[codes], ((0, 0), (0, 0), (0, _ADVANCE - _GLYPH_COLS)))  # (n, 9, 6)
    line = cells.transpose(1, 0, 2).reshape(_GLYPH_ROWS, -1)[:, : len(text) * _ADVANCE - 1]
    return line.repeat(scale, axis=0).repeat(scale, axis=1)


def _text_width(text: str, scale: int) -> int:
    return max(0, len(text) * _ADVANCE - 1) * scale


def _draw_text(
    image: np.ndarray,
    text: str,
    x: int,
    y: int,
    scale: int,
    colour: np.ndarray,
    align: str = "left",
    rotate: bool = False,
) -> None:
    """Draw ``text`` with its cap line at row ``y``; ``align`` says whether ``x`` is its left end, centre or right end.

    With ``rotate``, the text reads upwards (turned 90 degrees anticlockwise): ``y`` is then the centre of the line
    along the image's rows and ``x`` the column of its cap line.
    """
    mask = _text_mask(text, scale)
    if rotate:
        mask = np.rot90(mask)
        top, left = y - mask.shape[0] // 2, x
    else:
        offset = {"left": 0, "centre": mask.shape[1] // 2, "right": mask.shape[1]}[align]
        top, left = y, x - offset
    # clip to the image
    rows = slice(max(0, top), min(image.shape[0], top + mask.shape[0]))
    cols = slice(max(0, left), min(image.shape[1], left + mask.shape[1]))
    mask = mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    image[rows, cols][mask] = colour


# ------------------------------------------------------------------------------------------------- colour map

# viridis (van der Walt and Smith, 2015) at 9 evenly spaced points from 0 to 1, as published (e.g. R's
# viridisLite::viridis(9)); its lightness rises nearly linearly, so linear interpolation between these keeps it
# perceptually ordered.
_VIRIDIS = np.array(
    [
        [0x44, 0x01, 0x54],
        [0x47, 0x2D, 0x7B],
        [0x3B, 0x52, 0x8B],
        [0x2C, 0x72, 0x8E],
        [0x21, 0x90, 0x8C],
        [0x27, 0xAD, 0x81],
        [0x5D, 0xC8, 0x63],
        [0xAA, 0xDC, 0x32],
        [0xFD, 0xE7, 0x25],
    ],
    dtype=np.float64,
)


def _viridis_table(levels: int) -> np.ndarray:
    """The colours of ``levels`` evenly spaced points from 0 to 1, linearly interpolated between the anchors."""
    x, anchors = np.linspace(0.0, 1.0, levels), np.linspace(0.0, 1.0, len(_VIRIDIS))
    return np.rint(np.stack([np.interp(x, anchors, _VIRIDIS[:, c]) for c in range(3)], axis=-1)).astype(np.uint8)


# 4096 levels: neighbouring levels differ by at most one unit in a channel (the steepest segment rises 77 units in
# 1/8), so looking the colour up is what interpolating it would give, to within that unit.
_VIRIDIS_TABLE = _viridis_table(4096)


def _viridis(x: np.ndarray) -> np.ndarray:
    """RGB uint8 colours of ``x`` in [0, 1] (clipped), shape ``x.shape + (3,)``."""
    last = len(_VIRIDIS_TABLE) - 1
    return _VIRIDIS_TABLE[np.rint(np.clip(x, 0.0, 1.0) * last).astype(np.intp)]


# ------------------------------------------------------------------------------------------------ resampling


def _rebin(values: np.ndarray, lower: np.ndarray, upper: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean over each interval ``[edges[i], edges[i + 1])`` of the step function that is ``values[..., k]`` on
    ``[lower[k], upper[k])`` (sorted, non-overlapping) and 0 elsewhere; along the last axis.

    Exact for a step function: it differences the function's integral, which is linear between the points
    lower[0], upper[0], lower[1], upper[1], ... An interval that touches no bin gets exactly 0.
    """
    integral = np.cumsum(values * (upper - lower), axis=-1)
    integral = np.concatenate([np.zeros(values.shape[:-1] + (1,)), integral], axis=-1)  # at lower[k]: integral[k]
    points = np.stack([lower, upper], axis=1).reshape(-1)
    at_points = np.repeat(integral, 2, axis=-1)[..., 1:-1]  # integral[k] at lower[k], integral[k + 1] at upper[k]
    j = np.clip(np.searchsorted(points, edges, side="right") - 1, 0, len(points) - 2)
    span = points[j + 1] - points[j]
    t = np.clip((edges - points[j]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    at_edges = at_points[..., j] + t * (at_points[..., j + 1] - at_points[..., j])
    return np.diff(at_edges, axis=-1) / np.diff(edges)


# ------------------------------------------------------------------------------------------------------- axes


def _tick_step(span: float, length: int, min_gap: float, integer: bool) -> float:
    """The smallest of 1, 2, 5 x 10^k (>= 1 if ``integer``) that puts ticks at least ``min_gap`` pixels apart."""
    exponent = math.floor(math.log10(max(span * min_gap / length, 1e-300)))
    for k in range(exponent, exponent + 3):
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0**k
            if (not integer or step >= 1) and step / span * length >= min_gap:
                return step
    return 10.0 ** (exponent + 3)  # unreachable: 10^(exponent + 1) already satisfies the gap


def _ticks(lo: float, hi: float, step: float) -> np.ndarray:
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return np.arange(first, last + 1) * step


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text  # no "-0"


def _decade_label(exponent: int) -> str:
    return {0: "1", 1: "10", -1: "0.1"}.get(exponent, f"1e{exponent}")


# ------------------------------------------------------------------------------------------------------ checks


def _as_array(name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"Invalid {name}: expected an array of real numbers ({error})") from None
    if array.ndim != ndim:
        raise ValueError(f"Invalid {name}: expected a {ndim}-D array, got shape {array.shape}")
    return array


def _check_steps(steps: Any) -> np.ndarray:
    array = _as_array("steps", steps, 1)
    if array.size == 0:
        raise ValueError("Invalid steps: empty (expected at least one optimizer step to draw)")
    if not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
        raise ValueError(f"Invalid steps: expected integers, got {np.array2string(array, threshold=8)}")
    if np.any(np.diff(array) <= 0):
        at = int(np.flatnonzero(np.diff(array) <= 0)[0])
        raise ValueError(f"Invalid steps: expected increasing steps, got {array[at]:.0f} then {array[at + 1]:.0f}")
    return array


def _check_bins(counts: Any, lower: Any, upper: Any, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts and edges of the bins that are drawn: those with finite edges (not the IEEE inf/NaN buckets)."""
    counts = _as_array("counts", counts, 2)
    lower, upper = _as_array("lower", lower, 1), _as_array("upper", upper, 1)
    if counts.shape[0] != n_steps:
        raise ValueError(f"Invalid counts: expected one row per step ({n_steps}), got shape {counts.shape}")
    for name, edges in (("lower", lower), ("upper", upper)):
        if edges.shape != counts.shape[1:]:
            raise ValueError(f"Invalid {name}: expected one edge per bin ({counts.shape[1]}), got shape {edges.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("Invalid counts: expected finite counts >= 0, got a negative, inf or NaN count")
    drawn = np.isfinite(lower) & np.isfinite(upper)
    counts, lower, upper = counts[:, drawn], lower[drawn], upper[drawn]
    if np.any(upper <= lower):
        at = int(np.flatnonzero(upper <= lower)[0])
        raise ValueError(f"Invalid upper: bin {at} has upper {upper[at]} <= lower {lower[at]}")
    if np.any(lower[1:] < upper[:-1]):
        at = int(np.flatnonzero(lower[1:] < upper[:-1])[0])
        raise ValueError(
            f"Invalid lower: expected increasing, non-overlapping bins, got bin {at + 1} starting at {lower[at + 1]}"
            f" below the end of bin {at} ({upper[at]})"
        )
    if not np.any(counts > 0):
        raise ValueError("Invalid counts: no bin with finite edges holds an element (nothing to draw)")
    return counts, lower, upper


# ------------------------------------------------------------------------------------------------------ render

_BACKGROUND = np.array([255, 255, 255], dtype=np.uint8)
_INK = np.array([40, 40, 40], dtype=np.uint8)


def render_stacked_histogram(
    steps: Sequence[int] | np.ndarray,
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    width: int = 640,
    height: int = 400,
    title: str = "",
    margin: float = 0.25,
    decades: float = 4.0,
) -> np.ndarray:
    r"""Draw histograms of :math:`\log_{10}|g|`, one per optimizer step, stacked along the steps (Liu et al., Fig. 2).

    The x axis is the optimizer step: the histogram of ``steps[i]`` fills the columns from ``steps[i]`` to
    ``steps[i + 1]`` (the last one spans as far as the gap before it, or one step), so unevenly spaced steps, a
    dense early phase then a sparse one, sit where they were taken. The y axis is :math:`\log_{10}|g|`, cropped
    to the bins that hold an element at any step, with ``margin`` decades on either side. The colour is the
    fraction of the step's elements per decade of :math:`|g|` (each step's counts normalised to sum to 1, spread
    evenly in :math:`\log_{10}|g|` within each bin), on viridis with a log scale over ``decades`` decades up to
    the next power of ten above the largest value: the tails of the distribution show as well as its bulk.
    Pixels that no element falls in stay white. Axes, tick labels, the title and a colour bar are drawn in an
    embedded bitmap font, one pixel per font pixel below 1280 x 800 (twice as large from there, and so on).

    Args:
        steps: the optimizer steps, increasing integers, one per histogram.
        counts: bucket counts, shape ``(len(steps), number of bins)``, finite and >= 0.
        lower: :math:`\log_{10}` of each bin's lower edge, shape ``(number of bins,)``; bins increasing and not
            overlapping (gaps are allowed). Bins with a non-finite edge are left out, e.g. the inf and NaN buckets
            of :func:`~lightning_radam.callbacks.bucket_edges`, so that ``np.log10(bucket_edges())`` can be passed
            as they are. Exact zeros are not part of the picture: leave them out of the counts.
        upper: :math:`\log_{10}` of each bin's upper edge, same shape as ``lower``.
        width: of the image in pixels (default: 640).
        height: of the image in pixels (default: 400).
        title: drawn above the plot, e.g. the TensorBoard tag (default: none). Printable ASCII; other characters
            are drawn as '?', and a title too long for the width is shortened with '...'.
        margin: decades of :math:`\log_{10}|g|` added below and above the occupied bins (default: 0.25).
        decades: the range of the colour scale, in decades of the fraction per decade (default: 4.0): values
            below it get the scale's darkest colour.

    Returns:
        The picture, a ``uint8`` array of shape ``(height, width, 3)`` (RGB), for :func:`encode_png`.

    Raises:
        TypeError: if an argument is not of the kind described above.
        ValueError: if ``steps`` is empty, not integers or not increasing; if ``counts``, ``lower`` and ``upper``
            do not match it and each other in shape, a count is negative or not finite, a bin is empty or bins
            overlap, or no bin with finite edges holds an element; if ``width`` or ``height`` leave no room for
            the plot; if ``margin`` is negative or ``decades`` not positive.

    Example:
        >>> import numpy as np
        >>> edges = np.linspace(-8.0, 0.0, 33)
        >>> counts = np.array([[0.0] * 20 + [5.0, 9.0, 5.0] + [0.0] * 9, [0.0] * 8 + [5.0, 9.0, 5.0] + [0.0] * 21])
        >>> image = render_stacked_histogram([0, 10], counts, edges[:-1], edges[1:], title="grad/log10_abs")
        >>> image.shape, image.dtype
        ((400, 640, 3), dtype('uint8'))
    """
    width = check_int("width", width, minimum=1)
    height = check_int("height", height, minimum=1)
    steps = _check_steps(steps)
    counts, lower, upper = _check_bins(counts, lower, upper, len(steps))
    if not isinstance(title, str):
        raise TypeError(f"Invalid title: expected a str, got {title!r}")
    if not (isinstance(margin, numbers.Real) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"Invalid margin: {margin!r} (expected a finite number of decades >= 0)")
    decades = check_positive("decades", decades)

    # density: the fraction of each step's elements per decade, in each bin
    totals = counts.sum(axis=1, keepdims=True)
    density = counts / np.where(totals > 0, totals, 1.0) / (upper - lower)
    occupied = occupied_span(counts.max(axis=0))  # not empty: checked above
    y_lo, y_hi = lower[occupied.start] - margin, upper[occupied.stop - 1] + margin
    gaps = np.diff(steps)
    x_lo, x_hi = steps[0], steps[-1] + (gaps[-1] if gaps.size else 1.0)

    # layout: title, plot, colour bar (right), tick labels and axis labels (left, below)
    s = max(1, min(width // 1280 + 1, height // 800 + 1))
    cap, line, pad, tick = _CAP_ROWS * s, _GLYPH_ROWS * s, 6 * s, 3 * s
    top = pad + line + pad if title else pad + cap
    bottom = height - (pad + line + 2 * s + line + tick + 2 * s)  # x label, tick labels, ticks
    plot_h = bottom - top
    if plot_h < 16:
        raise ValueError(f"Invalid height: {height} leaves no room for the plot (at least {height + 16 - plot_h})")
    y_step = _tick_step(y_hi - y_lo, plot_h, 3 * line, integer=False)
    y_ticks = _ticks(y_lo, y_hi, y_step)
    y_labels = [_tick_label(v, y_step) for v in y_ticks]
    left = pad + line + 2 * s + max((_text_width(t, s) for t in y_labels), default=0) + 2 * s + tick
    log_max = math.ceil(math.log10(density.max()) - 1e-9)  # the colour scale: decades up to log_max
    log_min = log_max - decades
    bar_ticks = range(math.ceil(log_min - 1e-9), log_max + 1)
    bar_labels = [_decade_label(e) for e in bar_ticks]
    bar_w = 12 * s
    right = width - (pad + line + 4 * s + max(_text_width(t, s) for t in bar_labels) + 4 * s + tick + bar_w + 12 * s)
    plot_w = right - left
    if plot_w < 16:
        raise ValueError(f"Invalid width: {width} leaves no room for the plot (at least {width + 16 - plot_w})")

    # data: rebinned onto the pixel rows (top row: highest log10|g|), then onto the pixel columns
    rows = _rebin(density, lower, upper, np.linspace(y_lo, y_hi, plot_h + 1))[:, ::-1]  # (steps, plot_h)
    step_upper = np.append(steps[1:], x_hi)
    pixels = _rebin(rows.T, steps, step_upper, np.linspace(x_lo, x_hi, plot_w + 1))  # (plot_h, plot_w)
    colours = _viridis((np.log10(np.where(pixels > 0, pixels, 1.0)) - log_min) / decades)
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = _BACKGROUND
    image[top:bottom, left:right] = np.where((pixels > 0)[..., None], colours, _BACKGROUND)

    # frame, ticks and tick labels
    image[top - s : top, left - s : right + s] = _INK
    image[bottom : bottom + s, left - s : right + s] = _INK
    image[top:bottom, left - s : left] = _INK
    image[top:bottom, right : right + s] = _INK
    for value, label in zip(y_ticks, y_labels, strict=True):
        row = top + min(plot_h - 1, math.floor((y_hi - value) / (y_hi - y_lo) * plot_h))  # the row holding value
        image[row : row + s, left - s - tick : left - s] = _INK
        _draw_text(image, label, left - s - tick - 2 * s, row - cap // 2, s, _INK, align="right")
    _draw_text(image, "log10 |g|", pad, (top + bottom) // 2, s, _INK, rotate=True)
    x_step = _tick_step(x_hi - x_lo, plot_w, _text_width(f"{x_hi:.0f}", s) + 4 * line, integer=True)
    for value in _ticks(x_lo, x_hi, x_step):
        col = left + min(plot_w - 1, math.floor((value - x_lo) / (x_hi - x_lo) * plot_w))  # the column holding it
        image[bottom + s : bottom + s + tick, col : col + s] = _INK
        _draw_text(image, f"{value:.0f}", col, bottom + s + tick + 2 * s, s, _INK, align="centre")
    _draw_text(image, "optimizer step", (left + right) // 2, height - pad - line, s, _INK, align="centre")

    # colour bar: the decades of the scale, bottom to top
    bar_left = right + s + 12 * s
    levels = np.linspace(log_max, log_min, plot_h)
    image[top:bottom, bar_left : bar_left + bar_w] = _viridis((levels - log_min) / decades)[:, None, :]
    for exponent, label in zip(bar_ticks, bar_labels, strict=True):
        row = bottom - 1 - round((exponent - log_min) / decades * (plot_h - 1))
        image[row : row + s, bar_left + bar_w : bar_left + bar_w + tick] = _INK
        _draw_text(image, label, bar_left + bar_w + tick + 4 * s, row - cap // 2, s, _INK)
    _draw_text(image, "fraction per decade", width - pad - line, (top + bottom) // 2, s, _INK, rotate=True)

    if title:
        room = (width - 2 * pad) // (_ADVANCE * s)
        shown = title if len(title) <= room else title[: max(0, room - 3)] + "..."
        start = (left + right - _text_width(shown, s)) // 2  # centred on the plot, as long as it fits
        _draw_text(image, shown, max(pad, min(start, width - pad - _text_width(shown, s))), pad, s, _INK)
    return image


# --------------------------------------------------------------------------------------------------------- PNG

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(rgb: np.ndarray) -> bytes:
    """``rgb`` as a PNG file: 8-bit RGB, not interlaced, every row unfiltered, deflated by zlib.

    Args:
        rgb: a ``uint8`` array of shape ``(height, width, 3)``, e.g. from :func:`render_stacked_histogram`.

    Returns:
        The bytes of the PNG file.

    Raises:
        TypeError: if ``rgb`` is not a NumPy array of ``uint8``.
        ValueError: if its shape is not ``(height, width, 3)`` with ``height, width >= 1``.

    Example:
        >>> png = encode_png(np.zeros((2, 3, 3), dtype=np.uint8))
        >>> png[1:4], png[12:16], png[-8:-4]
        (b'PNG', b'IHDR', b'IEND')
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        kind = f"{rgb.dtype} {type(rgb).__name__}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise TypeError(f"Invalid rgb: expected a uint8 NumPy array, got {kind}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"Invalid rgb: expected shape (height, width, 3) with height, width >= 1, got {rgb.shape}")
    height, width = rgb.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, filters 0, no interlace
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def image_summary(tag: str, png_bytes: bytes, height: int, width: int) -> Summary:
    """A TensorBoard summary holding one PNG image, for the Images tab.

    Write it with ``writer.file_writer.add_summary(summary, step)`` (``writer`` a ``SummaryWriter``, e.g. a
    ``TensorBoardLogger``'s ``experiment``). It needs no PIL, unlike ``SummaryWriter.add_image``.

    Args:
        tag: the image's tag, a non-empty str.
        png_bytes: a PNG file, e.g. from :func:`encode_png`.
        height: of the image in pixels, as in the PNG's header.
        width: of the image in pixels, as in the PNG's header.

    Returns:
        A ``tensorboard.compat.proto.summary_pb2.Summary`` with one ``Summary.Image`` value (3 colour channels).

    Raises:
        TypeError: if ``tag`` is not a str, ``png_bytes`` not bytes, or ``height``/``width`` not ints.
        ValueError: if ``tag`` is empty, ``png_bytes`` is not a PNG, or ``height``/``width`` differ from its header.

    Example:
        >>> summary = image_summary("grad/picture", encode_png(np.zeros((2, 3, 3), dtype=np.uint8)), 2, 3)
        >>> summary.value[0].tag, summary.value[0].image.height, summary.value[0].image.width
        ('grad/picture', 2, 3)
    """
    if not isinstance(tag, str):
        raise TypeError(f"Invalid tag: expected a str, got {tag!r}")
    if not tag:
        raise ValueError("Invalid tag: '' (expected a non-empty str)")
    if not isinstance(png_bytes, bytes):
        raise TypeError(f"Invalid png_bytes: expected bytes, got {type(png_bytes).__name__}")
    if png_bytes[:8] != _PNG_SIGNATURE or png_bytes[12:16] != b"IHDR" or len(png_bytes) < 24:
        raise ValueError(f"Invalid png_bytes: not a PNG file (starts with {png_bytes[:16]!r})")
    png_width, png_height = struct.unpack(">II", png_bytes[16:24])
    for name, value, expected in (("height", height, png_height), ("width", width, png_width)):
        check_int(name, value, minimum=1)
        if value != expected:
            raise ValueError(f"Invalid {name}: {value}, but the PNG is {png_width} x {png_height} (width x height)")
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=png_bytes)
    return Summary(value=[Summary.Value(tag=tag, image=image)])
