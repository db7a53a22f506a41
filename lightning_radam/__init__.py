"""lightning-radam: RAdam for PyTorch Lightning, with the paper's diagnostics in TensorBoard.

Example:
    >>> from lightning_radam import RAdam, RAdamMixin
"""

from lightning_radam.baselines import Adam2k, linear_warmup, untuned_exponential_warmup, untuned_linear_warmup
from lightning_radam.mixin import RAdamMixin
from lightning_radam.optim import RAdam, RectificationStats, radam

__version__ = "0.1.0"

__all__ = ["RAdam", "RAdamMixin", "RectificationStats", "radam", "__version__"]
__all__ += ["Adam2k", "linear_warmup", "untuned_linear_warmup", "untuned_exponential_warmup"]
