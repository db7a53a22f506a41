"""Lightning callbacks that put RAdam's diagnostics into TensorBoard (installed as ``lightning_radam.callbacks``).

Example:
    >>> from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor
"""

from .gradient_histogram_monitor import (
    DistortionWarning,
    GradientHistogramMonitor,
    bucket_edges,
    counts_in_c,
    log2_bucket_counts,
)
from .layout import monitoring_layout
from .rectification_monitor import RectificationMonitor
from .stacked_histogram import encode_png, image_summary, render_stacked_histogram

__all__ = [
    "DistortionWarning",
    "GradientHistogramMonitor",
    "RectificationMonitor",
    "bucket_edges",
    "counts_in_c",
    "encode_png",
    "image_summary",
    "log2_bucket_counts",
    "monitoring_layout",
    "render_stacked_histogram",
]
