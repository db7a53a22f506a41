"""lightning-radam: RAdam for PyTorch Lightning, with the paper's diagnostics in TensorBoard.

Example:
    >>> from lightning_radam import RAdam, RAdamMixin
"""

from lightning_radam.mixin import RAdamMixin
from lightning_radam.optim import RAdam, RectificationStats, radam

__version__ = "0.1.0"

__all__ = ["RAdam", "RAdamMixin", "RectificationStats", "radam", "__version__"]
