"""TensorBoard custom-scalars layout: the rectification curves and gradient counts, grouped on one page."""

from __future__ import annotations

__all__ = ["monitoring_layout"]


def monitoring_layout() -> dict[str, dict[str, list]]:
    r"""The layout :class:`~lightning_radam.callbacks.RectificationMonitor` writes to the "Custom Scalars" tab.

    In the format of ``SummaryWriter.add_custom_scalars``: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``.
    Tags are regular expressions, so every optimizer and parameter group appears in the same chart.
    The variance chart is the paper's argument on one page: read it with a logarithmic y axis,
    ``var_adaptive_lr`` falls by orders of magnitude over the first steps while ``var_rectified_lr``
    stays nearly flat (within a factor of about 3 of its limit).

    Example:
        >>> sorted(monitoring_layout())
        ['RAdam gradients', 'RAdam rectification']
    """
    return {
        "RAdam rectification": {
            "rho_t (length of the approximated simple moving average)": ["Multiline", [r"^radam/(.*/)?rho_t$"]],
            "r_t (variance rectification term)": ["Multiline", [r"^radam/(.*/)?r_t$"]],
            "variance of the adaptive learning rate, per unit sigma^2 (log scale)": [
                "Multiline",
                [
                    r"^radam/(.*/)?var_adaptive_lr$",
                    r"^radam/(.*/)?var_adaptive_lr_first_order$",
                    r"^radam/(.*/)?var_rectified_lr$",
                ],
            ],
            "rectified and skipped steps": ["Multiline", [r"^radam/(.*/)?rectified$", r"^radam/(.*/)?skipped$"]],
            "adaptive learning rate per layer, log10": [
                "Multiline",
                [r"^radam/layer/.*/adaptive_lr_log10_mean$", r"^radam/layer/.*/rectified_lr_log10_mean$"],
            ],
            "spread of the adaptive learning rate per layer, std of log10": [
                "Multiline",
                [r"^radam/layer/.*/adaptive_lr_log10_std$"],
            ],
        },
        "RAdam gradients": {
            "exact zeros in the gradients": ["Multiline", [r"/zeros$"]],
            "inf and NaN in the gradients": ["Multiline", [r"/nonfinite$"]],
        },
    }
