"""Statistics of sharded tensors (DTensors: FSDP2, tensor parallelism), for RAdam's ``nonfinite_grad`` and the monitors.

A statistic of a DTensor that is a sum over its elements (bucket counts, a count of non-finite values, a sum of
logarithms) is computed on each rank's local shard (:func:`local_tensor`: no communication) and then summed across
the ranks that hold the other shards, with :func:`sum_across_shards`: over the mesh dimensions where the tensor is
sharded, and not over those where it is replicated (every replica holds the same elements and would count them
again). The sum is a torchmetrics :class:`~torchmetrics.Metric` with a sum-reduced state, one per sharded mesh
dimension. It is a collective: every rank of the mesh calls it, with tensors of the same placements in the same order.
Plain tensors (single process, DDP) take no part in it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeGuard

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor
from torchmetrics import Metric

__all__ = ["has_dtensors", "is_dtensor", "local_tensor", "sum_across_shards"]


def is_dtensor(tensor: Any) -> TypeGuard[DTensor]:
    """Whether ``tensor`` is a DTensor (one part of it on each rank of a device mesh)."""
    return isinstance(tensor, DTensor)


def local_tensor(tensor: Tensor) -> Tensor:
    """This rank's shard of a DTensor (no communication), any other tensor as it is.

    Example:
        >>> local_tensor(torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    return tensor.to_local() if is_dtensor(tensor) else tensor


def has_dtensors(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a parameter of ``optimizer`` is a DTensor: a statistic of its gradients needs every rank."""
    return any(is_dtensor(p) for group in optimizer.param_groups for p in group["params"])


def _sharding(like: Tensor) -> tuple[Any, tuple[int, ...]] | None:
    """``(mesh, the mesh dimensions of size > 1 where like is sharded)``, or ``None`` if every rank holds it whole.

    Sharded means any placement but ``Replicate``: ``Shard`` and ``_StridedShard`` (FSDP2 over tensor parallelism,
    not a ``Shard`` subclass in torch 2.13) split the elements, ``Partial`` is refused.
    """
    if not is_dtensor(like):
        return None
    if any(placement.is_partial() for placement in like.placements):
        raise ValueError(
            f"Cannot sum across the shards of a DTensor with placements {like.placements}: a Partial placement holds "
            "unreduced values (reduce it first; FSDP2 reduce-scatters gradients before the optimizer step)"
        )
    mesh = like.device_mesh
    dims = tuple(d for d, placement in enumerate(like.placements) if not placement.is_replicate() and mesh.size(d) > 1)
    return (mesh, dims) if dims else None


class _ShardSum(Metric):
    """The sum of one tensor over the ranks of a process group: torchmetrics' sum-reduced state."""

    full_state_update = False
    total: Tensor

    def __init__(self, process_group: Any) -> None:
        super().__init__(process_group=process_group, compute_with_cache=False)
        self.add_state("total", default=torch.tensor(0, device="cpu"), dist_reduce_fx="sum")

    def update(self, part: Tensor) -> None:
        self.total = self.total + part

    def compute(self) -> Tensor:
        return self.total


@functools.cache
def _shard_sum(process_group: Any) -> _ShardSum:
    """One metric per process group, reset before each use (building one costs about 20 times as much)."""
    return _ShardSum(process_group)


def sum_across_shards(
    parts: Sequence[Tensor], likes: Sequence[Tensor], keep: Sequence[int] | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Sum partial results computed on local shards across the shards: ``(total, kept)``.

    ``parts[i]`` is computed on this rank's shard of ``likes[i]`` (a DTensor), or on ``likes[i]`` itself (a plain
    tensor, which is not summed across ranks). ``kept`` holds ``parts[k]`` summed across the shards of ``likes[k]``
    for each ``k`` in ``keep`` (every index when ``keep`` is None), ``total`` the sum of all of them. Parts of the
    same dtype and sharding (mesh and sharded mesh dimensions) travel together: one sum of their total and their
    kept parts per sharded mesh dimension, so parts that are not kept add nothing to the traffic.

    Args:
        parts: partial results, all of one shape, on the devices of the shards they were computed from.
        likes: the tensor (DTensor or not) each part was computed from.
        keep: indices of the parts wanted one by one (default: None, all of them).

    Returns:
        ``(total, kept)``, on every rank.

    Raises:
        ValueError: if ``parts`` is empty, ``parts`` and ``likes`` differ in length, or a DTensor of ``likes`` has a
            Partial placement.

    Example:
        >>> total, kept = sum_across_shards([torch.tensor([1, 2]), torch.tensor([3, 4])], [torch.ones(3)] * 2, [1])
        >>> total.tolist(), [k.tolist() for k in kept]
        ([4, 6], [[3, 4]])
    """
    if not parts or len(parts) != len(likes):
        raise ValueError(f"Invalid parts: {len(parts)} parts for {len(likes)} tensors (expected as many, at least 1)")
    kept_indices = range(len(parts)) if keep is None else keep
    kept_set = set(kept_indices)
    # per sharding (dtype and device included): (indices, kept indices), in the order of parts, the same on every rank
    layouts: dict[Any, tuple[list[int], list[int]]] = {}
    for i, (part, like) in enumerate(zip(parts, likes, strict=True)):
        indices, kept = layouts.setdefault((_sharding(like), part.dtype, part.device), ([], []))
        indices.append(i)
        if i in kept_set:
            kept.append(i)
    totals: list[Tensor] = []
    summed: dict[int, Tensor] = {}
    for (sharding, _, _), (indices, kept) in layouts.items():
        rows = torch.stack([torch.stack([parts[i] for i in indices]).sum(0), *(parts[i] for i in kept)])
        if sharding is not None:
            mesh, dims = sharding
            for dim in dims:  # every sharded dimension in turn: the sum over all the ranks that hold a shard
                metric = _shard_sum(mesh.get_group(dim))
                metric.reset()
                metric.update(rows)
                rows = metric.compute().reshape(rows.shape)
        totals.append(rows[0].to(parts[0].device))
        summed.update(zip(kept, rows[1:], strict=True))
    return torch.stack(totals).sum(0), [summed[k] for k in kept_indices]
