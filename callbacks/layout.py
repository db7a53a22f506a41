"""TensorBoard custom-scalars layout: the rectification curves and gradient counts, grouped on one page."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .distortion import QUANTILE_NAMES

__all__ = ["monitoring_layout"]

_OPT_GROUP = r"radam/(optimizer\d+/)?group\d+/"  # the per-group tags of RectificationMonitor


def monitoring_layout(
    layers: bool = False, gradient_prefixes: Sequence[str] = ("grad",), rectification: bool = True, tag_prefix: str = ""
) -> dict[str, dict[str, list]]:
    r"""The layout :class:`~lightning_radam.callbacks.RectificationMonitor` writes to the "Custom Scalars" tab.

    In the format of ``SummaryWriter.add_custom_scalars``: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``.
    Tags are regular expressions matched from the start of the tag (TensorBoard uses ``re.match``), so every
    optimizer and parameter group appears in the same chart. Only charts of tags that are logged are written, since
    TensorBoard draws a chart that matches nothing as an empty frame. The variance chart plots log10 of the
    variances: ``var_adaptive_lr_log10`` falls by orders of magnitude over the first steps while
    ``var_rectified_lr_log10`` stays nearly flat (within about half a decade of its limit), on TensorBoard's
    default linear axis.

    Args:
        layers: include the per-layer charts (RectificationMonitor's ``layers=`` selects parameters) (default: False).
        gradient_prefixes: the ``prefix`` of each :class:`~lightning_radam.callbacks.GradientHistogramMonitor` of
            the run; its quantiles, distortion, zero and non-finite counts get curves. Empty for none
            (default: ``("grad",)``).
        rectification: include the rectification charts, which RectificationMonitor fills for RAdam and Adam-like
            optimizers (default: True).
        tag_prefix: put before every tag, as a ``TensorBoardLogger(prefix=...)`` puts its prefix and ``"-"``
            before each metric it logs (``"run-"`` for ``prefix="run"``) (default: ``""``).

    Example:
        >>> sorted(monitoring_layout())
        ['RAdam gradients', 'RAdam rectification']
        >>> monitoring_layout(gradient_prefixes=())["RAdam rectification"]["r_t (variance rectification term)"]
        ['Multiline', ['radam/(optimizer\\d+/)?group\\d+/r_t$']]
        >>> monitoring_layout(rectification=False, tag_prefix="run-")["RAdam gradients"]["exact zeros in the gradients"]
        ['Multiline', ['run\\-grad/(optimizer\\d+/)?zeros$']]
    """
    charts: dict[str, list] = {
        "rho_t (length of the approximated simple moving average)": ["Multiline", [_OPT_GROUP + "rho_t$"]],
        "r_t (variance rectification term)": ["Multiline", [_OPT_GROUP + "r_t$"]],
        "log10 variance of the adaptive learning rate, per unit sigma^2": [
            "Multiline",
            [
                _OPT_GROUP + "var_adaptive_lr_log10$",
                _OPT_GROUP + "var_adaptive_lr_first_order_log10$",
                _OPT_GROUP + "var_rectified_lr_log10$",
            ],
        ],
        "rectified and skipped steps": ["Multiline", [_OPT_GROUP + "rectified$", _OPT_GROUP + "skipped$"]],
    }
    if layers:
        charts["adaptive learning rate per layer, log10"] = [
            "Multiline",
            [r"radam/layer/.+/adaptive_lr_log10_mean$", r"radam/layer/.+/rectified_lr_log10_mean$"],
        ]
        charts["spread of the adaptive learning rate per layer, std of log10"] = [
            "Multiline",
            [r"radam/layer/.+/adaptive_lr_log10_std$"],
        ]
    layout = {"RAdam rectification": charts} if rectification else {}
    prefixes = [re.escape(prefix) + r"/(optimizer\d+/)?" for prefix in dict.fromkeys(gradient_prefixes)]
    if prefixes:
        layout["RAdam gradients"] = {
            "quantiles of log10|g| (p01, p10, p50, p90, p99)": [
                "Multiline",
                [f"{prefix}log10_abs/{name}$" for prefix in prefixes for name in QUANTILE_NAMES],
            ],
            "distortion of log10|g| since step 0, decades towards zero": [
                "Multiline",
                [prefix + "distortion$" for prefix in prefixes],
            ],
            "exact zeros in the gradients": ["Multiline", [prefix + "zeros$" for prefix in prefixes]],
            "inf and NaN in the gradients": ["Multiline", [prefix + "nonfinite$" for prefix in prefixes]],
        }
    start = re.escape(tag_prefix)
    return {
        category: {title: [kind, [start + tag for tag in tags]] for title, (kind, tags) in charts.items()}
        for category, charts in layout.items()
    }
