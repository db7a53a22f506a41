"""Argument checks shared by the optimizers, the rectification functions, the baselines and the mixin.

One copy of each check. Every error is one line, a ``TypeError`` for the wrong kind of value or a
``ValueError`` for a value out of range, naming the argument and the value received, as ``torch.optim``
does (``Invalid learning rate: -1.0``). A number is accepted where ``torch.optim`` accepts one: a Python
int or float, a NumPy scalar, a ``fractions.Fraction``, a 1-element real tensor or array; never a bool.
Checked numbers come back as Python floats (an lr tensor stays a tensor, as in ``torch.optim``): NumPy
scalars kept in a parameter group would compute the step size in float32, and would make a checkpoint
fail to load under ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

# The largest lr and weight_decay accepted: sqrt(float32 max), about 1.8e19. The step hands lr * r_t / (1 - beta1^t),
# lr * weight_decay and weight_decay to kernels that convert them to float32 for float32, bfloat16 and float16
# parameters. Tried on every path (for-loop, foreach, fused; coupled and decoupled weight decay; threshold 4 and 5;
# betas up to 1 - 2^-53): step() raised "value cannot be converted to type float without overflow" from lr = 3.7e22
# (lr / (1 - beta1) with 1 - beta1 = 2^-53) and from weight_decay = 3.4e38, and never for any eps (a huge eps only
# shrinks the update). Below this bound lr / (1 - beta1^t) <= 1.7e35 and lr * weight_decay <= float32 max, whatever
# the betas. float16 parameters have a narrower range (65504) for the coupled weight decay and the momentum-SGD step
# size, as in torch.optim: that depends on the parameters, not on these values alone, and is not checked here.
MAX_SCALE = math.sqrt(torch.finfo(torch.float32).max)


def shown(value: Any) -> str:
    """``value`` as an error message shows it, on one line: ``f"{value}"`` as torch.optim, long ints as ``~1e+400``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(int(value)) >= 10**30:
        return f"{'-' if value < 0 else ''}~1e+{int(math.log10(abs(int(value))))}"
    text = " ".join(f"{value}".split())
    return text if len(text) <= 80 else text[:77] + "..."


def shown_repr(value: Any) -> str:
    """``repr(value)`` on one line, shortened; how a value of the wrong type is shown."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return shown(value)
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


def real(value: Any, what: str, expected: str = "a float") -> float:
    """``value`` as a Python float (ints beyond the float range become +-inf, for the range checks to reject).

    Args:
        value: a real number (not a bool), or a 1-element real tensor or NumPy array.
        what: the start of every message, e.g. ``"Invalid learning rate"``.
        expected: what the TypeError says was expected.

    Raises:
        TypeError: if ``value`` is not a real number, or a tensor/array of another dtype.
        ValueError: if a tensor or array has more than one element.
    """
    if type(value) is float:  # the common case, first: rho_inf and rho_t check beta2 on every optimizer step
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if isinstance(value, torch.Tensor):
            is_real = not (value.is_complex() or value.dtype == torch.bool)
        else:
            is_real = value.dtype.kind in "iuf"
        if not is_real:
            raise TypeError(f"{what}: expected {expected}, got a {value.dtype} {type(value).__name__}")
        if value.size != 1 if isinstance(value, np.ndarray) else value.numel() != 1:
            raise ValueError(f"{what}: expected 1 element, got shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what}: expected {expected}, got {shown_repr(value)}")
    try:
        return float(value)
    except OverflowError:  # an int or a Fraction beyond the float range
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]  # numbers.Real declares no "<"


def check_bool(name: str, value: Any, optional: bool = False) -> bool | None:
    """``value`` as a bool (a NumPy bool is accepted); ``None`` too when ``optional``."""
    if optional and value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"Invalid {name}: expected {'None or ' if optional else ''}a bool, got {shown_repr(value)}")
    return bool(value)


def check_choice(name: str, value: Any, choices: tuple[str | None, ...]) -> Any:
    """``value`` if it is one of ``choices`` (strings, and ``None`` where it is one of them)."""
    if (value is None or isinstance(value, str)) and value in choices:
        return value
    if not isinstance(value, str):
        raise TypeError(f"Invalid {name}: expected one of {choices}, got {shown_repr(value)}")
    raise ValueError(f"Invalid {name}: {value!r} (expected one of {choices})")


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as a Python int ``>= minimum`` (a NumPy integer is accepted, a bool or a float is not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"Invalid {name}: expected an int, got {shown_repr(value)}")
    if not int(value) >= minimum:
        raise ValueError(f"Invalid {name}: {shown(value)} (expected {name} >= {minimum})")
    return int(value)


def check_lr(lr: Any) -> float | torch.Tensor:
    """A learning rate in ``[0, MAX_SCALE]``; a 1-element tensor is returned as it is (torch.optim keeps it)."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError(f"Invalid learning rate: a Tensor lr must have 1 element, got shape {tuple(lr.shape)}")
    value = real(lr, "Invalid learning rate", "a float or a 1-element Tensor")
    if not 0.0 <= value <= MAX_SCALE:
        raise ValueError(f"Invalid learning rate: {shown(lr)} (expected 0 <= lr <= {MAX_SCALE:.2g})")
    return lr if isinstance(lr, torch.Tensor) else value


def _beta(value: Any, what: str) -> float:
    beta = real(value, what)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"{what}: {shown(value)} (expected 0 <= beta < 1)")
    return beta


def check_betas(betas: Any) -> tuple[float, float]:
    """``(beta1, beta2)``, each in ``[0, 1)``, from a list, a tuple, or a 1-d tensor or array of 2 elements."""
    is_pair = isinstance(betas, (tuple, list)) or (isinstance(betas, (torch.Tensor, np.ndarray)) and betas.ndim == 1)
    if not is_pair or len(betas) != 2:
        raise TypeError(
            f"Invalid betas: expected a pair of floats, got {shown_repr(betas)}; pass (beta1, beta2), e.g. (0.9, 0.999)"
        )
    return _beta(betas[0], "Invalid beta parameter at index 0"), _beta(betas[1], "Invalid beta parameter at index 1")


def check_beta2(beta2: Any) -> float:
    """The second-moment decay of the rectification functions and the warmups, in ``[0, 1)``."""
    value = real(beta2, "Invalid beta2")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"Invalid beta2: {shown(beta2)} (expected 0 <= beta2 < 1)")
    return value


def check_eps(eps: Any) -> float:
    """eps > 0 and finite: eps = 0 divides 0 by 0 where a gradient element has always been 0."""
    value = real(eps, "Invalid eps")
    if not 0.0 < value < math.inf:
        raise ValueError(f"Invalid eps: {shown(eps)} (expected 0 < eps < inf)")
    return value


def check_weight_decay(weight_decay: Any) -> float:
    value = real(weight_decay, "Invalid weight_decay")
    if not 0.0 <= value <= MAX_SCALE:
        raise ValueError(f"Invalid weight_decay: {shown(weight_decay)} (expected 0 <= weight_decay <= {MAX_SCALE:.2g})")
    return value


def check_threshold(threshold: Any) -> float:
    """The rectification threshold on rho_t, in ``[4, inf)``: r_t is undefined for rho_t <= 4."""
    value = real(threshold, "Invalid threshold")
    if not 4.0 <= value < math.inf:
        raise ValueError(
            f"Invalid threshold: {shown(threshold)} (expected 4 <= threshold < inf: r_t is undefined for rho_t <= 4)"
        )
    return value


def check_fraction(name: str, value: Any) -> float:
    """A real number in ``[0, 1]`` (not a bool, not a str)."""
    fraction = real(value, f"Invalid {name}", "a real number in [0, 1]")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"Invalid {name}: {shown(value)} (expected 0 <= {name} <= 1)")
    return fraction


def check_positive(name: str, value: Any) -> float:
    """A real number in ``(0, inf)``."""
    number = real(value, f"Invalid {name}", "a number")
    if not 0.0 < number < math.inf:
        raise ValueError(f"Invalid {name}: {shown(value)} (expected 0 < {name} < inf)")
    return number


#: The named warmups of ``RAdamMixin``'s ``warmup`` hyperparameter (Ma & Yarats' untuned warmups).
WARMUPS = ("untuned_linear", "untuned_exponential")


def check_warmup(warmup: Any) -> int | str:
    """A warmup: a number of steps ``>= 0`` (``None`` and ``"none"`` mean 0, no warmup) or one of :data:`WARMUPS`."""
    if warmup is None or (isinstance(warmup, str) and warmup == "none"):
        return 0
    expected = f"None, an int number of steps, {WARMUPS[0]!r} or {WARMUPS[1]!r}"
    if isinstance(warmup, str):
        if warmup not in WARMUPS:
            raise ValueError(f"Invalid warmup: {shown_repr(warmup)} (expected {expected})")
        return warmup
    if isinstance(warmup, (bool, np.bool_)) or not isinstance(warmup, numbers.Integral):
        raise TypeError(f"Invalid warmup: expected {expected}, got {shown_repr(warmup)}")
    return check_int("warmup", warmup, minimum=0)
