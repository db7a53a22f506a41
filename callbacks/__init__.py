"""Lightning callbacks that put RAdam's diagnostics into TensorBoard (installed as ``lightning_radam.callbacks``).

Example:
    >>> from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor
"""

from .gradient_histogram_monitor import (
    GradientHistogramMonitor,
    bucket_edges,
    log2_bucket_counts,
)
from .layout import monitoring_layout
from .rectification_monitor import RectificationMonitor

__all__ = [
    "GradientHistogramMonitor",
    "RectificationMonitor",
    "bucket_edges",
    "log2_bucket_counts",
    "monitoring_layout",
]
