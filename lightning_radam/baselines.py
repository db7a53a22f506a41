r"""Baselines for comparing RAdam with the alternatives the paper and its critics discuss.

* :class:`Adam2k`: the paper's Adam-2k ablation (Liu et al., ICLR 2020, section 3.2). For the
  first ``k`` steps only the second moment :math:`v_t` is updated (parameters and first moment
  frozen), so that the adaptive learning rate is estimated from ``k`` gradients before it is used;
  then plain Adam. The paper uses ``k = 2000`` with :math:`\beta_2 = 0.999`.
* Warmup factors for :class:`torch.optim.lr_scheduler.LambdaLR`: :func:`linear_warmup` over a
  chosen number of steps, and the untuned warmups of Ma & Yarats ("On the adequacy of untuned
  warmup for adaptive optimization", arXiv:1910.04209), which need no choice beyond
  :math:`\beta_2`: linear :math:`w_t = \min(1, t (1-\beta_2)/2)` (:func:`untuned_linear_warmup`)
  and exponential :math:`w_t = 1 - \exp(-(1-\beta_2) t)` (:func:`untuned_exponential_warmup`).
* Adam-eps (:math:`\epsilon = 10^{-4}` instead of :math:`10^{-8}`) is only a configuration:
  ``torch.optim.Adam(params, eps=1e-4)``.

``LambdaLR`` calls its factor with the number of optimizer steps already taken (0 before the
first), so the factor returned for index ``i`` scales step :math:`t = i + 1`.

Example:
    >>> import torch
    >>> from lightning_radam.baselines import untuned_linear_warmup
    >>> model = torch.nn.Linear(4, 1)
    >>> optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    >>> scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, untuned_linear_warmup(0.98))
    >>> round(optimizer.param_groups[0]["lr"], 8)  # the first step is taken at lr * (1 - 0.98) / 2
    1e-05
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_radam._checks import check_beta2, check_int, check_positive
from lightning_radam.optim import _check_adam_group, _lazy_state

__all__ = ["Adam2k", "linear_warmup", "untuned_linear_warmup", "untuned_exponential_warmup"]


def _linear_factor(index: int, warmup_steps: float) -> float:
    r"""Linear warmup, :math:`w_t = \min(1, t / \text{warmup\_steps})` at the ``LambdaLR`` index ``index = t - 1``.

    The one copy of the formula, for :func:`linear_warmup`, :func:`untuned_linear_warmup` and the mixin.
    """
    return min(1.0, (index + 1) / warmup_steps)


def _exponential_factor(index: int, rate: float) -> float:
    r"""Exponential warmup, :math:`w_t = 1 - \exp(-\text{rate}\; t)` at the ``LambdaLR`` index ``index = t - 1``.

    The one copy of the formula, for :func:`untuned_exponential_warmup` (rate :math:`1 - \beta_2`) and the mixin.
    """
    return -math.expm1(-rate * (index + 1))


def _untuned_warmup_steps(beta2: float) -> float:
    r"""Length of Ma & Yarats' untuned linear warmup, :math:`2 / (1 - \beta_2)` steps, for a checked ``beta2``.

    Within 1e-9 (relative) of an integer, the integer: ``1 - beta2`` is inexact in binary (``1 - 0.9`` is
    ``0.09999999999999998``), and the warmup should reach 1 at step 20, not 21.

    Example:
        >>> _untuned_warmup_steps(0.9), _untuned_warmup_steps(0.999), _untuned_warmup_steps(0.997)
        (20, 2000, 666.6666666666661)
    """
    warmup_steps = 2.0 / (1.0 - beta2)
    nearest = round(warmup_steps)
    return nearest if abs(warmup_steps - nearest) <= 1e-9 * warmup_steps else warmup_steps


def linear_warmup(warmup_steps: float) -> Callable[[int], float]:
    r"""Linear warmup factor :math:`w_t = \min(1, t / \text{warmup\_steps})` for ``LambdaLR``.

    Args:
        warmup_steps: number of steps to reach the full learning rate, > 0 (need not be an integer).

    Returns:
        A function of the ``LambdaLR`` step index ``i`` returning :math:`w_{i+1}`.

    Raises:
        ValueError: if ``warmup_steps`` is not positive and finite.
        TypeError: if ``warmup_steps`` is not a number.

    Example:
        >>> factor = linear_warmup(4)
        >>> [factor(i) for i in range(5)]
        [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    warmup_steps = check_positive("warmup_steps", warmup_steps)

    def factor(index: int) -> float:
        return _linear_factor(index, warmup_steps)

    return factor


def untuned_linear_warmup(beta2: float) -> Callable[[int], float]:
    r"""Ma & Yarats' untuned linear warmup, :math:`w_t = \min(1, t (1-\beta_2)/2)`, for ``LambdaLR``.

    The warmup lasts :math:`2/(1-\beta_2)` steps: 2000 for :math:`\beta_2 = 0.999`, 100 for 0.98.

    Args:
        beta2: the optimizer's second-moment decay, in ``[0, 1)``.

    Returns:
        A function of the ``LambdaLR`` step index ``i`` returning :math:`w_{i+1}`.

    Raises:
        ValueError: if ``beta2`` is outside ``[0, 1)``.
        TypeError: if ``beta2`` is not a number.

    Example:
        >>> factor = untuned_linear_warmup(0.98)
        >>> [round(factor(i), 12) for i in (0, 49, 99, 500)]
        [0.01, 0.5, 1.0, 1.0]
    """
    return linear_warmup(_untuned_warmup_steps(check_beta2(beta2)))


def untuned_exponential_warmup(beta2: float) -> Callable[[int], float]:
    r"""Ma & Yarats' untuned exponential warmup, :math:`w_t = 1 - \exp(-(1-\beta_2) t)`, for ``LambdaLR``.

    Args:
        beta2: the optimizer's second-moment decay, in ``[0, 1)``.

    Returns:
        A function of the ``LambdaLR`` step index ``i`` returning :math:`w_{i+1}`.

    Raises:
        ValueError: if ``beta2`` is outside ``[0, 1)``.
        TypeError: if ``beta2`` is not a number.

    Example:
        >>> factor = untuned_exponential_warmup(0.98)
        >>> round(factor(0), 6), round(factor(49), 6)
        (0.019801, 0.632121)
    """
    rate = 1.0 - check_beta2(beta2)

    def factor(index: int) -> float:
        return _exponential_factor(index, rate)

    return factor


def _check_adam2k_group(group: dict[str, Any]) -> dict[str, Any]:
    """Validate an Adam2k group's hyper-parameters; return them as they are stored (as RAdam's)."""
    return {**_check_adam_group(group), "k": check_int("k", group["k"], minimum=0)}


class Adam2k(Optimizer):
    r"""Adam-2k: Adam whose first ``k`` steps update only the second moment (Liu et al., 2020, section 3.2).

    .. math::
       \begin{aligned}
            &\textbf{for}\: t = 1, 2, \ldots \textbf{do}                                                     \\
            &\hspace{5mm} g_t \leftarrow \nabla_\theta f_t(\theta_{t-1}) \;(+\,\lambda\theta_{t-1}),
                \quad v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2                                     \\
            &\hspace{5mm} \textbf{if}\: t \le k: \; \theta_t \leftarrow \theta_{t-1}
                \quad\text{(first moment not updated either)}                                                \\
            &\hspace{5mm} \textbf{else}: \; m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \;
                \theta_t \leftarrow \theta_{t-1} - \gamma \frac{m_t / (1-\beta_1^{t-k})}
                {\sqrt{v_t / (1-\beta_2^t)} + \epsilon}
       \end{aligned}

    The first moment starts from zero at step ``k + 1`` and is bias-corrected from there, while the
    second moment has been averaging since step 1. With ``k = 0`` this is exactly
    ``torch.optim.Adam``. The paper shows that Adam-2k (``k = 2000``, :math:`\beta_2 = 0.999`)
    avoids the bad early updates of Adam without warmup: evidence that the variance of the
    adaptive learning rate, not the first moment, is the problem. It is an ablation, not a product:
    the ``k`` gradients spent on estimating :math:`v` make no progress.

    Each parameter counts its own steps, so a parameter that first receives a gradient late spends
    its own first ``k`` steps estimating ``v``.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate, a number or a 1-element tensor (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its square (default: (0.9, 0.999)).
        eps: added to the bias-corrected ``sqrt(v_t)`` (default: 1e-8).
        weight_decay: L2 penalty added to the gradient (default: 0).
        k: number of initial steps that only update ``v``, >= 0 (default: 2000).

    Raises:
        ValueError: if a hyper-parameter is out of range (``lr`` and ``weight_decay`` at most about 1.8e19, as
            :class:`~lightning_radam.RAdam`'s); the message names it and the value.
        TypeError: if a hyper-parameter has the wrong type, or ``k`` is not an integer (NumPy integers are).
        RuntimeError: from :meth:`step`, if a gradient is sparse.

    Example:
        >>> import torch
        >>> from lightning_radam import Adam2k
        >>> weight = torch.nn.Parameter(torch.ones(3))
        >>> optimizer = Adam2k([weight], lr=0.1, k=2)
        >>> for _ in range(3):
        ...     optimizer.zero_grad()
        ...     weight.pow(2).sum().backward()
        ...     optimizer.step()
        >>> weight.detach()  # frozen for 2 steps, then one Adam step of size lr
        tensor([0.9000, 0.9000, 0.9000])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        k: int = 2000,
    ) -> None:
        defaults = _check_adam2k_group(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, k=k))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, validated like the constructor's arguments before anything is added.

        Raises:
            ValueError, TypeError: as the constructor; the optimizer is then left as it was.
        """
        if isinstance(param_group, dict) and "params" in param_group:  # otherwise torch raises its own error
            checked = _check_adam2k_group({**self.defaults, **param_group})
            param_group.update((key, value) for key, value in checked.items() if key in param_group)
        super().add_param_group(param_group)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: a closure that re-evaluates the model and returns the loss (optional).

        Returns:
            The loss returned by ``closure``, or ``None``.

        Raises:
            RuntimeError: if a gradient is sparse.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            k = group["k"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad: Tensor = param.grad
                if grad.is_sparse:
                    raise RuntimeError("Adam2k does not support sparse gradients")
                state = _lazy_state(self.state[param], param)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                if torch.is_complex(param):  # real and imaginary parts as two reals, as torch.optim.Adam
                    param, grad, exp_avg, exp_avg_sq = (
                        torch.view_as_real(t) for t in (param, grad, exp_avg, exp_avg_sq)
                    )
                state["step"] += 1
                step = int(state["step"].item())
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if step <= k:
                    continue  # estimate v only: the parameter and the first moment stay frozen
                exp_avg.lerp_(grad, 1 - beta1)
                bias_correction1 = 1.0 - beta1 ** (step - k)
                bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(group["eps"])
                param.addcdiv_(exp_avg, denom, value=-group["lr"] / bias_correction1)
        return loss
