r"""RAdam: Adam with the variance of its adaptive learning rate rectified (arXiv:1908.03265).

One algorithm in three layers, as in ``torch.optim``: :class:`RAdam` owns the parameter groups and
the state; :func:`radam` is the functional update, which dispatches to a for-loop, a foreach or a
fused implementation. The rectification term and the bias corrections are one number per step,
computed in float64 on the host (:mod:`lightning_radam.rectification`), so no path synchronises
with the device to decide whether a step is rectified.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor
from torch.optim import Optimizer

from lightning_radam._checks import check_betas, check_choice, check_eps, check_lr, check_threshold, check_weight_decay
from lightning_radam._checks import check_bool as _check_bool
from lightning_radam._compat import AMP_SCALING_FLAG, FusedAdam, amp_scaling_inputs, fused_adam
from lightning_radam._distributed import is_dtensor, local_tensor, sum_across_shards
from lightning_radam.rectification import _r_t, _rho_t

__all__ = ["RAdam", "RectificationStats", "radam"]

_SKIP, _SGD, _RECTIFIED = "skip", "sgd", "rectified"
_NONFINITE_GRAD = ("ignore", "raise", "skip")


@dataclass(frozen=True)
class RectificationStats:
    """What the last optimizer step did in one parameter group, as host-side Python numbers.

    Attributes:
        step: the step count ``t`` of the group's most advanced parameter that received a gradient.
        rho_t: the length of the approximated simple moving average at ``step``.
        r_t: the variance rectification term at ``step`` (``0.0`` where ``rho_t <= 4``).
        rectified: whether that step took the rectified adaptive update (``rho_t > threshold``).
    """

    step: int
    rho_t: float
    r_t: float
    rectified: bool


@dataclass(frozen=True)
class _StepPlan:
    stats: RectificationStats
    mode: str  # _SKIP, _SGD or _RECTIFIED
    step_size: float  # multiplies m / (sqrt(v) + eps) when rectified, m when SGD
    bias_correction2: float  # 1 - b2^t


@torch.compiler.disable  # host-side Python numbers: a graph break under torch.compile, never traced
def _plan_step(
    step: int, beta1: float, beta2: float, lr: float, threshold: float, degenerated_to_sgd: bool
) -> _StepPlan:
    """Host-side float64 coefficients of one step: whether it is rectified, and its step size."""
    rho = _rho_t(float(step), beta2)  # Python floats: microseconds, on every step
    r = _r_t(rho, beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    if rho > threshold:
        # theta -= lr * r_t * m_hat * sqrt(1 - b2^t) / (sqrt(v) + eps)
        plan = _RECTIFIED, lr * r * math.sqrt(bias_correction2) / bias_correction1
    elif degenerated_to_sgd:
        plan = _SGD, lr / bias_correction1  # theta -= lr * m_hat, the paper's Algorithm 2
    else:
        plan = _SKIP, 0.0
    return _StepPlan(RectificationStats(step, rho, r, plan[0] == _RECTIFIED), *plan, bias_correction2)


class _Planner:
    """Caches one :class:`_StepPlan` per distinct step count within one call of :func:`radam`."""

    def __init__(self, **hyper: Any) -> None:
        self.hyper = hyper
        self.plans: dict[int, _StepPlan] = {}

    def __call__(self, step: int) -> _StepPlan:
        if step not in self.plans:
            self.plans[step] = _plan_step(step, **self.hyper)
        return self.plans[step]

    @torch.compiler.disable
    def stats(self) -> RectificationStats | None:
        return self.plans[max(self.plans)].stats if self.plans else None


_Bucket = tuple[_StepPlan, list[int]]


@torch.compiler.disable  # the host-side step plan: a graph break under torch.compile, before the tensor updates
def _advance(planner: _Planner, state_steps: list[Tensor]) -> list[_Bucket]:
    """Increment the host-side step counts; return the plan of each count with the indices that share it.

    The buckets carry positions, not step counts, so code compiled after this graph break sees the same
    Python values from one step to the next (only the plans' floats change, and dynamo lifts those).
    """
    torch._foreach_add_(state_steps, 1)
    buckets: dict[int, list[int]] = {}
    for i, step_t in enumerate(state_steps):
        buckets.setdefault(int(step_t.item()), []).append(i)
    return [(planner(step), indices) for step, indices in buckets.items()]


def _select(indices: list[int], *tensorlists: list[Tensor]) -> list[list[Tensor]]:
    return [[ts[i] for i in indices] for ts in tensorlists]


@torch.compiler.disable
def _host_number(tensor: Tensor) -> float:
    """A 1-element tensor's value on the host (a graph break under torch.compile; off the CPU, a synchronisation)."""
    return tensor.item()


def _view_real(*tensors: list[Tensor]) -> list[list[Tensor]]:
    return [[torch.view_as_real(t) if t.is_complex() else t for t in ts] for ts in tensors]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _low_precision_radam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    plan: _StepPlan,
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    decoupled_weight_decay: bool,
) -> None:
    """One step of float16/bfloat16 tensors with the same step count, computed in float32 and stored rounded once.

    As torch's fused kernel does: the update reads the float32 second moment before it is rounded, so a
    ``(1 - b2) g^2`` that underflows in float16 still counts in this step's denominator (rounded first, the
    denominator would be eps alone), and eps = 1e-8 does not round to 0.
    """
    params32, grads32, exp_avgs32, exp_avg_sqs32 = (
        [t.float() for t in ts] for ts in (params, grads, exp_avgs, exp_avg_sqs)
    )
    if weight_decay != 0 and not decoupled_weight_decay:
        torch._foreach_add_(grads32, params32, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs32, grads32, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs32, beta2)
    torch._foreach_addcmul_(exp_avg_sqs32, grads32, grads32, 1 - beta2)
    if plan.mode != _SKIP:
        if weight_decay != 0 and decoupled_weight_decay:
            torch._foreach_mul_(params32, 1 - lr * weight_decay)
        if plan.mode == _RECTIFIED:
            denom = torch._foreach_sqrt(exp_avg_sqs32)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params32, exp_avgs32, denom, -plan.step_size)
        else:
            torch._foreach_add_(params32, exp_avgs32, alpha=-plan.step_size)
        torch._foreach_copy_(params, params32)
    torch._foreach_copy_(exp_avgs, exp_avgs32)
    torch._foreach_copy_(exp_avg_sqs, exp_avg_sqs32)


_Grouped = dict[tuple[torch.device, torch.dtype], tuple[list[list[Tensor]], list[int]]]


def _group_by_device_and_dtype(tensorlists: list[list[Tensor]]) -> _Grouped:
    """Aligned tensor lists split by the (device, dtype) of the first list's tensors, with each bucket's indices.

    Plain Python rather than ``Optimizer._group_tensors_by_device_and_dtype``, which under ``torch.compile``
    returns a single ``(None, None)`` bucket (leaving the split to inductor) where the paths need the real one.
    """
    indices: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, tensor in enumerate(tensorlists[0]):
        indices.setdefault((tensor.device, tensor.dtype), []).append(i)
    if len(indices) == 1:  # the common case: no copies of the lists
        ((key, bucket),) = indices.items()
        return {key: (list(tensorlists), bucket)}
    return {key: ([[ts[i] for i in bucket] for ts in tensorlists], bucket) for key, bucket in indices.items()}


def _single_tensor_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    planner: _Planner,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    hyper: dict[str, Any] = dict(
        beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps,
        decoupled_weight_decay=decoupled_weight_decay,
    )  # fmt: skip
    plans = {i: plan for plan, indices in _advance(planner, state_steps) for i in indices}
    for i, (param, grad, exp_avg, exp_avg_sq) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, strict=True)):
        plan = plans[i]
        if maximize:
            grad = -grad
        if torch.is_complex(param):
            param, grad, exp_avg, exp_avg_sq = (torch.view_as_real(t) for t in (param, grad, exp_avg, exp_avg_sq))
        if param.dtype in _LOW_PRECISION:
            _low_precision_radam_([param], [grad], [exp_avg], [exp_avg_sq], plan, **hyper)
            continue
        if weight_decay != 0 and not decoupled_weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if plan.mode == _SKIP:
            continue
        if weight_decay != 0 and decoupled_weight_decay:
            param.mul_(1 - lr * weight_decay)
        if plan.mode == _RECTIFIED:
            param.addcdiv_(exp_avg, exp_avg_sq.sqrt().add_(eps), value=-plan.step_size)
        else:
            param.add_(exp_avg, alpha=-plan.step_size)


def _multi_tensor_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    planner: _Planner,
    **hyper: Any,
) -> None:
    for plan, indices in _advance(planner, state_steps):
        bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs = _select(
            indices, params, grads, exp_avgs, exp_avg_sqs
        )
        _foreach_radam_(bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs, plan, **hyper)


def _foreach_radam_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    plan: _StepPlan,
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """The foreach update of tensors whose step counts (advanced already) are equal, per device and dtype."""
    grouped = _group_by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs])
    for device_tensors, _ in grouped.values():
        device_params, device_grads, device_exp_avgs, device_exp_avg_sqs = _view_real(*device_tensors)
        if maximize:
            device_grads = list(torch._foreach_neg(device_grads))
        if device_params[0].dtype in _LOW_PRECISION:
            _low_precision_radam_(
                device_params, device_grads, device_exp_avgs, device_exp_avg_sqs, plan,
                beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps,
                decoupled_weight_decay=decoupled_weight_decay,
            )  # fmt: skip
            continue
        if weight_decay != 0 and not decoupled_weight_decay:
            device_grads = list(torch._foreach_add(device_grads, device_params, alpha=weight_decay))
        torch._foreach_lerp_(device_exp_avgs, device_grads, 1 - beta1)
        torch._foreach_mul_(device_exp_avg_sqs, beta2)
        torch._foreach_addcmul_(device_exp_avg_sqs, device_grads, device_grads, 1 - beta2)
        del device_grads
        if plan.mode == _SKIP:
            continue
        if weight_decay != 0 and decoupled_weight_decay:
            torch._foreach_mul_(device_params, 1 - lr * weight_decay)
        if plan.mode == _RECTIFIED:
            denom = torch._foreach_sqrt(device_exp_avg_sqs)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(device_params, device_exp_avgs, denom, -plan.step_size)
        else:
            torch._foreach_add_(device_params, device_exp_avgs, alpha=-plan.step_size)


_FUSED_DEVICES = ("cpu", "cuda")
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fused_unsupported(params: list[Tensor]) -> str | None:
    """Why the fused kernel cannot update ``params`` (``None`` when it can)."""
    kinds = {(p.device.type, p.dtype) for p in params}
    if all(device in _FUSED_DEVICES and dtype in _FUSED_DTYPES for device, dtype in kinds):
        return None
    for index, param in enumerate(params):
        if param.device.type not in _FUSED_DEVICES or param.dtype not in _FUSED_DTYPES:
            dtypes = ", ".join(str(d).removeprefix("torch.") for d in _FUSED_DTYPES)
            return (
                f"parameter {index} is a {param.dtype} tensor on {param.device.type}; the fused path supports "
                f"{dtypes} tensors on {' and '.join(_FUSED_DEVICES)}"
            )
    return None


def _require_fused_supported(params: list[Tensor]) -> None:
    reason = _fused_unsupported(params)
    if reason is not None:
        raise RuntimeError(f"RAdam(fused=True) cannot update these parameters: {reason}")


def _unscale_grads_(grads: list[Tensor], grad_scale: Tensor | None) -> None:
    """Divide ``grads`` in place by the GradScaler's scale (a 1-element tensor), on their own devices."""
    if grad_scale is None:
        return
    by_device: dict[torch.device, list[Tensor]] = {}
    for grad in grads:
        by_device.setdefault(grad.device, []).append(grad)
    for device, device_grads in by_device.items():
        torch._foreach_div_(device_grads, grad_scale.to(device, non_blocking=True))


def _same_dense_layout(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor) -> bool:
    if param.is_contiguous() and grad.is_contiguous() and exp_avg.is_contiguous() and exp_avg_sq.is_contiguous():
        return True
    tensors = (param, grad, exp_avg, exp_avg_sq)
    return param.dim() == 4 and all(t.is_contiguous(memory_format=torch.channels_last) for t in tensors)


@torch.compiler.disable  # the fused kernel's float arguments change every step: traced, each step would recompile
def _call_eagerly(kernel: FusedAdam, *args: Any, **kwargs: Any) -> None:
    kernel(*args, **kwargs)


def _fused_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    planner: _Planner,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    kernel: FusedAdam,
    grad_scale: Tensor | None = None,
) -> None:
    # A rectified step is an Adam step with lr' = lr * r_t and eps' = eps / sqrt(1 - b2^t):
    # sqrt(1-b2^t) / (sqrt(v) + eps) = 1 / (sqrt(v) / sqrt(1-b2^t) + eps'). torch's fused Adam kernel
    # runs it per (step, device, dtype) bucket; the unrectified steps (the first few) take the foreach path.
    foreach_hyper: dict[str, Any] = dict(
        beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
    )  # fmt: skip
    for plan, indices in _advance(planner, state_steps):
        grouped = _group_by_device_and_dtype(_select(indices, params, grads, exp_avgs, exp_avg_sqs, state_steps))
        for (device, _), (device_tensors, _) in grouped.items():
            device_grad_scale = None if grad_scale is None else grad_scale.to(device, non_blocking=True)
            # the kernel walks the four tensors' memory in step: layouts that may not match take the foreach path
            count = len(device_tensors[0])
            if plan.mode == _RECTIFIED:
                dense = [_same_dense_layout(*tensors) for tensors in zip(*device_tensors[:4], strict=True)]
                linear, other = [i for i in range(count) if dense[i]], [i for i in range(count) if not dense[i]]
            else:
                linear, other = [], list(range(count))
            if other:
                bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs = _select(other, *device_tensors[:4])
                _unscale_grads_(bucket_grads, device_grad_scale)
                _foreach_radam_(bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs, plan, **foreach_hyper)
            if not linear:
                continue
            bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs, bucket_steps = _select(
                linear, *device_tensors
            )
            if device.type != "cpu":  # the CUDA kernel reads the step on the device: one fill, no copy from the host
                step = torch.full((), float(plan.stats.step), dtype=torch.float32, device=device)
                bucket_steps = [step] * len(linear)
            r = plan.stats.r_t  # > 0: rho_t > threshold >= 4
            _call_eagerly(
                kernel, bucket_params, bucket_grads, bucket_exp_avgs, bucket_exp_avg_sqs, [], bucket_steps,
                amsgrad=False, lr=lr * r, beta1=beta1, beta2=beta2,
                # decoupled: the kernel multiplies theta by 1 - lr' * weight_decay', which must be 1 - lr * weight_decay
                weight_decay=weight_decay / r if decoupled_weight_decay else weight_decay,
                eps=eps / math.sqrt(plan.bias_correction2), maximize=maximize,
                grad_scale=device_grad_scale, found_inf=None,
            )  # fmt: skip


def radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    grad_scale: Tensor | None = None,
    beta1: float,
    beta2: float,
    lr: float | Tensor,
    weight_decay: float,
    eps: float,
    decoupled_weight_decay: bool = False,
    threshold: float = 5.0,
    degenerated_to_sgd: bool = False,
    maximize: bool = False,
) -> RectificationStats | None:
    r"""Functional RAdam: one step over lists of tensors, updated in place.

    ``state_steps`` are CPU scalar tensors (one per parameter, as in ``torch.optim.RAdam``),
    incremented here. See :class:`RAdam` for the algorithm and the arguments. With ``foreach`` and
    ``fused`` both ``None``, the fused path is taken when every parameter is a float16, bfloat16,
    float32 or float64 tensor on the CPU or a CUDA device, and the for-loop (CPU) or foreach
    (elsewhere) path otherwise.

    Args:
        grad_scale: a GradScaler's scale (1-element tensor): the gradients are divided by it, in
            place, before the update (default: None).

    Returns:
        The :class:`RectificationStats` of the most advanced step count among ``params``, or
        ``None`` when ``params`` is empty.

    Raises:
        RuntimeError: if ``fused=True`` and a parameter is complex, or of another dtype or device
            than the fused path supports.

    Example:
        >>> p = torch.zeros(3); g = torch.ones(3)
        >>> m, v, t = torch.zeros(3), torch.zeros(3), torch.tensor(0.0)
        >>> radam([p], [g], [m], [v], [t], beta1=0.9, beta2=0.999, lr=1e-3, weight_decay=0.0, eps=1e-8)
        RectificationStats(step=1, rho_t=1.0, r_t=0.0, rectified=False)
    """
    if isinstance(lr, Tensor):
        # one host read: a CUDA tensor lr synchronises here, a Python float or CPU tensor does not
        lr = _host_number(lr)
    if fused:
        _require_fused_supported(params)
    elif fused is None and foreach is None:
        fused = _fused_unsupported(params) is None  # the default where supported; otherwise fall back silently
    kernel = fused_adam(decoupled_weight_decay) if fused else None
    if fused and kernel is None:  # torch's fused Adam is missing or changed (_compat warned once): foreach instead
        fused, foreach = False, True
    if not fused and foreach is None:
        foreach = all(p.device.type not in ("cpu", "meta") for p in params)  # torch's default: foreach off the CPU
    planner = _Planner(beta1=beta1, beta2=beta2, lr=lr, threshold=threshold, degenerated_to_sgd=degenerated_to_sgd)
    hyper: dict[str, Any] = dict(
        planner=planner, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps,
        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
    )  # fmt: skip
    if kernel is not None:
        _fused_radam(params, grads, exp_avgs, exp_avg_sqs, state_steps, kernel=kernel, grad_scale=grad_scale, **hyper)
    else:
        _unscale_grads_(grads, grad_scale)
        update = _multi_tensor_radam if foreach else _single_tensor_radam
        update(params, grads, exp_avgs, exp_avg_sqs, state_steps, **hyper)
    return planner.stats()


def _check_adam_group(group: dict[str, Any]) -> dict[str, Any]:
    """Validate the Adam hyper-parameters of a group (lr, betas, eps, weight_decay); return them as they are stored.

    Each error names the argument and the value. Numbers come back as Python floats (a Tensor lr as it is), betas
    as a tuple: see :mod:`lightning_radam._checks` for what is accepted and why.
    """
    return dict(
        lr=check_lr(group["lr"]),
        betas=check_betas(group["betas"]),
        eps=check_eps(group["eps"]),
        weight_decay=check_weight_decay(group["weight_decay"]),
    )


def _check_group(group: dict[str, Any]) -> dict[str, Any]:
    """Validate one RAdam parameter group's hyper-parameters; return them as they are stored (see above)."""
    checked = _check_adam_group(group)
    checked["threshold"] = check_threshold(group["threshold"])
    for name in ("decoupled_weight_decay", "degenerated_to_sgd", "maximize"):
        checked[name] = _check_bool(name, group[name])
    for name in ("foreach", "fused"):
        checked[name] = _check_bool(name, group[name], optional=True)
    checked["nonfinite_grad"] = check_choice("nonfinite_grad", group["nonfinite_grad"], _NONFINITE_GRAD)
    if checked["foreach"] and checked["fused"]:
        raise ValueError("Invalid foreach and fused: at most one of them can be True")
    return checked


def _param_tensors(param_group: dict[str, Any]) -> list[Tensor]:
    """The tensors of a group's ``params`` (a tensor, or tensors or (name, tensor) pairs), read once.

    An iterator is stored back as a list, which torch's ``add_param_group`` then reads again.
    """
    params = param_group["params"]
    if isinstance(params, Tensor):
        return [params]
    if isinstance(params, set):
        return []  # torch's add_param_group refuses sets (unordered)
    param_group["params"] = params = list(params)
    tensors = (p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params)
    return [t for t in tensors if isinstance(t, Tensor)]


def _lazy_state(state: dict[str, Any], param: Tensor) -> dict[str, Any]:
    """Create a parameter's Adam state on its first step, with torch.optim.RAdam's keys (host-side ``step``)."""
    if len(state) == 0:
        state["step"] = torch.tensor(0.0, dtype=torch.float32, device="cpu")  # not torch.set_default_device's
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state


class RAdam(Optimizer):
    r"""Rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020).

    .. math::
       \begin{aligned}
            &\rho_\infty \leftarrow 2/(1-\beta_2) - 1; \quad \textbf{for}\: t = 1, 2, \ldots:                  \\
            &\hspace{5mm} m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \;
                v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \;
                \rho_t \leftarrow \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)                                       \\
            &\hspace{5mm} \textbf{if}\: \rho_t > \tau: \; \theta_t \leftarrow \theta_{t-1} - \gamma r_t
                \frac{m_t}{1-\beta_1^t} \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t}+\epsilon}, \;
                r_t = \sqrt{\tfrac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}      \\
            &\hspace{5mm} \textbf{else}: \; \theta_t \leftarrow \theta_{t-1} - \gamma m_t/(1-\beta_1^t)
                \text{ if } \textit{degenerated\_to\_sgd} \text{ else } \theta_{t-1}
       \end{aligned}

    where :math:`g_t = \pm\nabla f_t(\theta_{t-1}) + \lambda\theta_{t-1}`; with ``decoupled_weight_decay``,
    :math:`\theta` is multiplied by :math:`1-\gamma\lambda` on updating steps instead. Below the threshold the
    variance is intractable: by default those first steps leave :math:`\theta` alone, as the authors' code does,
    because momentum-SGD steps are not scaled by the gradient and can blow up; ``degenerated_to_sgd=True``
    behaves as ``torch.optim.RAdam``, whose ``state_dict`` layout this shares. Each parameter counts its own
    steps. Rectified steps run through torch's fused Adam kernel wherever it applies. Under ``torch.compile``,
    the host-side step plan (step counts, :math:`\rho_t`, :math:`r_t`) is a graph break and the updates after it
    are captured, except the fused kernel, which runs as in eager mode.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate, a number or a 1-element tensor (default: 1e-3).
        betas: coefficients of the running averages of the gradient and its square (default: (0.9, 0.999)).
        eps: added to ``sqrt(v_t)``, outside the bias correction; > 0, as 0 would turn 0/0 into NaN (default: 1e-8).
        weight_decay: weight decay coefficient (default: 0).
        decoupled_weight_decay: decay the weights directly, as AdamW, rather than through the gradient (default: False).
        threshold: ``rho_t`` above which the update is rectified, >= 4; the paper uses 4 (default: 5.0).
        degenerated_to_sgd: below the threshold take a momentum-SGD step rather than none (default: False).
        maximize: maximize the objective instead of minimizing it (default: False).
        foreach: use the multi-tensor path; ``None`` picks it off the CPU where fused does not apply (default: None).
        fused: use the fused path; ``None`` picks it wherever it applies; if torch's fused Adam kernel is missing
            or changed, the foreach path runs instead, with a warning (default: None).
        nonfinite_grad: on an inf/NaN gradient, ``"ignore"`` (as torch), ``"raise"`` or ``"skip"``; for DTensor
            gradients (FSDP2) every rank takes the same decision, from the flags of all shards (default: "ignore").
        unscale_in_step: let ``torch.amp.GradScaler`` leave unscaling and inf/NaN skips to ``step`` (default: False).

    Raises:
        ValueError: if a hyper-parameter is out of range (``lr`` and ``weight_decay`` at most about 1.8e19, so
            that the step's scalars fit in float32); the message names it and the value.
        TypeError: if a hyper-parameter has the wrong type. Numbers may be Python or NumPy scalars or 1-element
            tensors, never bools; groups store them as Python floats (a tensor ``lr`` stays a tensor, as in torch).
        RuntimeError: if ``fused=True`` where the fused path does not apply; from :meth:`step`, if a gradient
            is sparse, or holds inf/NaN with ``nonfinite_grad="raise"``.

    Example:
        >>> import torch
        >>> from lightning_radam import RAdam
        >>> model = torch.nn.Linear(4, 1)
        >>> optimizer = RAdam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
        >>> for _ in range(6):
        ...     optimizer.zero_grad()
        ...     model(torch.randn(8, 4)).pow(2).mean().backward()
        ...     optimizer.step()
        >>> optimizer.rectification_stats()[0]  # rho_t > 5 from step 6 on: the step was rectified
        RectificationStats(step=6, rho_t=5.88..., r_t=0.11..., rectified=True)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        threshold: float = 5.0,
        degenerated_to_sgd: bool = False,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite_grad: str = "ignore",
        unscale_in_step: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
            threshold=threshold, degenerated_to_sgd=degenerated_to_sgd, maximize=maximize, foreach=foreach, fused=fused,
            nonfinite_grad=nonfinite_grad,
        )  # fmt: skip
        defaults.update(_check_group(defaults))
        unscale_in_step = bool(_check_bool("unscale_in_step", unscale_in_step))
        super().__init__(params, defaults)
        # Set after Optimizer.__init__: torch.compile loses attributes set before it (it graph-breaks inside).
        self._stats: list[RectificationStats | None] = []
        # Read by torch.amp.GradScaler.step: when True it hands grad_scale and found_inf to step() (as
        # attributes) instead of unscaling the gradients itself and skipping step() on inf/NaN.
        setattr(self, AMP_SCALING_FLAG, unscale_in_step)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, validated like the constructor's arguments before anything is added.

        Raises:
            ValueError, TypeError: as the constructor; the optimizer is then left as it was.
            RuntimeError: if the group asks for ``fused=True`` where the fused path does not apply.
        """
        if isinstance(param_group, dict) and "params" in param_group:  # otherwise torch raises its own error
            checked = _check_group({**self.defaults, **param_group})
            if checked["fused"]:
                _require_fused_supported(_param_tensors(param_group))
            param_group.update((key, value) for key, value in checked.items() if key in param_group)
        super().add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy and pickle: rectification_stats() with the state
        return {**super().__getstate__(), AMP_SCALING_FLAG: getattr(self, AMP_SCALING_FLAG), "_stats": self._stats}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_stats", [])
        self.__dict__.setdefault(AMP_SCALING_FLAG, False)
        for key, value in self.defaults_for_old_checkpoints().items():
            for group in self.param_groups:
                group.setdefault(key, value)
        for param_state in self.state.values():
            step = param_state.get("step")
            if step is not None and not (torch.is_tensor(step) and step.device.type == "cpu"):
                param_state["step"] = torch.tensor(float(step), dtype=torch.float32, device="cpu")  # host-side

    @staticmethod
    def defaults_for_old_checkpoints() -> dict[str, Any]:
        """Values given to group keys missing from an unpickled optimizer or a foreign ``state_dict``."""
        return dict(
            decoupled_weight_decay=False, threshold=5.0, degenerated_to_sgd=False, maximize=False,
            foreach=None, fused=None, nonfinite_grad="ignore",
        )  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state of this optimizer or of ``torch.optim.RAdam``.

        Keys that a saved group lacks (``threshold`` and ``degenerated_to_sgd`` in a
        ``torch.optim.RAdam`` checkpoint) keep the values this optimizer was built with, and so do
        ``foreach`` and ``fused`` when loading a ``torch.optim.RAdam`` checkpoint (they choose an
        implementation, not the algorithm). The groups are validated before anything is loaded, and
        :meth:`rectification_stats` restarts empty.

        Args:
            state_dict: as returned by :meth:`state_dict` of either optimizer.

        Raises:
            ValueError: if the saved groups do not match this optimizer's, or hold an invalid value.
        """
        state_dict = dict(state_dict)
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) == len(self.param_groups):
            merged = []
            for group, saved in zip(self.param_groups, saved_groups, strict=True):
                current = {k: v for k, v in group.items() if k != "params"}
                new = {**current, **saved}
                if "threshold" not in saved:  # a torch.optim.RAdam checkpoint
                    new["foreach"], new["fused"] = current["foreach"], current["fused"]
                new.update(_check_group(new))
                merged.append(new)
            state_dict["param_groups"] = merged
        super().load_state_dict(state_dict)
        self._stats = []

    def rectification_stats(self) -> list[RectificationStats | None]:
        """What the last :meth:`step` did, one entry per parameter group.

        Host-side numbers recorded during the step (no device synchronisation to read them). An
        entry is ``None`` for a group that has not stepped yet; a group in which no parameter had a
        gradient keeps its previous entry. Within a group the entry describes the most advanced step
        count (a parameter frozen for a while lags behind and has its own bias correction).

        Example:
            >>> opt = RAdam([torch.zeros(2, requires_grad=True)])
            >>> opt.rectification_stats()
            [None]
        """
        return self._stats + [None] * (len(self.param_groups) - len(self._stats))

    def _init_group(
        self,
        group: dict[str, Any],
        group_index: int,
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> None:
        # Filled in place, as torch.optim's: torch.compile runs a method of this name eagerly, then reads its lists
        for index, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                names = group.get("param_names")
                name = f" ({names[index]!r})" if names else ""
                raise RuntimeError(
                    f"RAdam does not support sparse gradients: parameter {index}{name} of parameter group"
                    f" {group_index} has one; nothing was updated"
                )
            state = _lazy_state(self.state[p], p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])

    @torch.compiler.disable  # host-side decisions: a graph break under torch.compile
    def _nonfinite_grads_skip_step(self) -> bool:
        """Apply each group's ``nonfinite_grad``: raise, or return True when the step must be skipped.

        A DTensor gradient (FSDP2) is checked on each rank's shard, and the flags are summed across the shards, so
        that every rank decides alike: a rank that skipped alone would leave its shard of the parameters behind.
        """
        checked = []  # (group index, parameter index, gradient)
        for group_index, group in enumerate(self.param_groups):
            if group["nonfinite_grad"] != "ignore":
                checked += [
                    (group_index, i, p.grad)
                    for i, p in enumerate(group["params"])
                    if p.grad is not None and p.grad.numel() and not p.grad.is_sparse
                ]
        if not checked:
            return False
        shards = [local_tensor(grad) for _, _, grad in checked]  # a DTensor's shard on this rank, or the gradient
        sharded = any(is_dtensor(grad) for _, _, grad in checked)
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for k, shard in enumerate(shards):
            if shard.numel():  # a rank's shard may be empty
                by_kind.setdefault((shard.device, shard.dtype), []).append(k)
        bad = []
        flags = [shard.new_zeros(1, dtype=torch.int64) for shard in shards] if sharded else []
        for indices in by_kind.values():
            # max |g| is inf or NaN exactly where the gradient holds one (unlike the 2-norm, it cannot overflow)
            finite = torch.isfinite(torch.stack(torch._foreach_norm([shards[k] for k in indices], math.inf)))
            if sharded:
                nonfinite = (~finite).long()
                for j, k in enumerate(indices):
                    flags[k] = nonfinite[j : j + 1]
            else:
                # one host read per (device, dtype): a synchronisation off the CPU
                bad += [k for k, ok in zip(indices, finite.tolist(), strict=True) if not ok]
        if sharded:  # one sum across the shards per sharding and one host read
            _, summed = sum_across_shards(flags, [grad for _, _, grad in checked])
            counts = torch.cat([count.to(summed[0].device) for count in summed]).tolist()
            bad = [k for k, count in enumerate(counts) if count]
        raising = sorted(k for k in bad if self.param_groups[checked[k][0]]["nonfinite_grad"] == "raise")
        if raising:
            group_index, index, _ = checked[raising[0]]
            names = self.param_groups[group_index].get("param_names")
            name = f" ({names[index]!r})" if names else ""
            raise RuntimeError(
                f"RAdam: non-finite gradient (inf or NaN) in parameter {index}{name} of parameter group {group_index}; "
                "nothing was updated (nonfinite_grad='raise'; 'skip' skips such steps instead)"
            )
        return bool(bad)

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        A step is skipped entirely (parameters, moments, step counts and :meth:`rectification_stats`
        untouched) when ``torch.amp.GradScaler`` reports inf/NaN through ``found_inf`` (with
        ``unscale_in_step=True``), or when a group with ``nonfinite_grad="skip"`` has a non-finite gradient.

        Args:
            closure: a closure that re-evaluates the model and returns the loss (optional).

        Returns:
            The loss returned by ``closure``, or ``None``.

        Raises:
            RuntimeError: if a gradient is sparse, or non-finite in a group with ``nonfinite_grad="raise"``
                (the message names the parameter's index in its group, and its name when the optimizer
                was built from ``named_parameters()``).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Set by torch.amp.GradScaler.step when _step_supports_amp_scaling (unscale_in_step=True).
        grad_scale, found_inf = amp_scaling_inputs(self)
        # The step counts live on the host (rho_t and r_t are computed there), so whether this step happens
        # must be known there: one read of found_inf, a synchronisation when it is on a GPU.
        if found_inf is not None and _host_number(found_inf) != 0:
            return loss
        if self._nonfinite_grads_skip_step():
            return loss
        lists: list[tuple[list[Tensor], ...]] = []  # every group's, before any update: a sparse gradient raises first
        for index, group in enumerate(self.param_groups):
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            self._init_group(group, index, params, grads, exp_avgs, exp_avg_sqs, state_steps)
            lists.append((params, grads, exp_avgs, exp_avg_sqs, state_steps))
        self._stats = self.rectification_stats()
        for index, (group, (params, grads, exp_avgs, exp_avg_sqs, state_steps)) in enumerate(
            zip(self.param_groups, lists, strict=True)
        ):
            if not params:
                continue
            beta1, beta2 = group["betas"]
            stats = radam(
                params, grads, exp_avgs, exp_avg_sqs, state_steps,
                foreach=group["foreach"], fused=group["fused"], grad_scale=grad_scale, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                decoupled_weight_decay=group["decoupled_weight_decay"], threshold=group["threshold"],
                degenerated_to_sgd=group["degenerated_to_sgd"], maximize=group["maximize"],
            )  # fmt: skip
            self._stats[index] = stats
        return loss
