"""The monitors under sharded training (FSDP2, tensor parallelism: DTensor parameters and gradients).

With plain tensors (one process, DDP) rank zero alone computes and writes: DDP's gradients are all-reduced before
``on_before_optimizer_step``, so rank zero holds the whole of every gradient. A DTensor's statistics need every
rank's shard: every rank takes part on the same logging steps (:func:`takes_part`), computes on its local shard and
enters the same sums across shards (:func:`lightning_radam._distributed.sum_across_shards`), in the same order; rank
zero alone writes.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import Tensor

from lightning_radam._distributed import has_dtensors, is_dtensor, sum_across_shards

__all__ = ["mean_and_std_across_shards", "std_mean", "sum_histograms_across_shards", "takes_part"]


def takes_part(trainer: pl.Trainer, optimizer: torch.optim.Optimizer) -> bool:
    """Whether this rank computes the statistics of ``optimizer``'s logging steps: rank zero, or every rank where a
    parameter is a DTensor."""
    return trainer.is_global_zero or has_dtensors(optimizer)


def sum_histograms_across_shards(
    counts: list[Tensor], nonzero: list[Tensor], likes: list[Tensor], keep: list[int]
) -> tuple[list[Tensor], list[Tensor], list[int]]:
    """Histograms of whole gradients from those of their shards: ``(bucket counts, non-zero counts, numbers of
    elements)``, each a list with the total over every gradient first, then one entry per index in ``keep``.

    Args:
        counts: per gradient, the bucket counts of this rank's shard (every element falls in one bucket, so they
            sum to the shard's number of elements).
        nonzero: per gradient, the number of non-zero elements of this rank's shard (a 0-d tensor).
        likes: the gradients (DTensors, or plain tensors that are not summed across ranks).
        keep: indices of the gradients that have a histogram of their own.

    Returns:
        The three lists; the numbers of elements are read on the host (after the sum, which synchronised anyway).

    Example:
        >>> counts = [torch.tensor([2, 0, 1]), torch.tensor([0, 1, 0])]
        >>> nonzero = [torch.tensor(1), torch.tensor(1)]
        >>> buckets, nonzero, numel = sum_histograms_across_shards(counts, nonzero, [torch.ones(3), torch.ones(1)], [1])
        >>> [b.tolist() for b in buckets], [int(n) for n in nonzero], numel
        ([[2, 1, 1], [0, 1, 0]], [2, 1], [4, 1])
    """
    rows = [torch.cat([c, n.reshape(1).to(c.device)]) for c, n in zip(counts, nonzero, strict=True)]
    total, kept = sum_across_shards(rows, likes, keep)
    table = torch.stack([total, *(row.to(total.device) for row in kept)])
    buckets = table[:, :-1]
    return list(buckets), list(table[:, -1]), buckets.sum(1).tolist()


def std_mean(values: Tensor) -> Tensor:
    """``[std, mean]`` (population, ``correction=0``) of ``values`` (this rank's shard of a tensor), on their device,
    in their precision (two passes: accurate however large the mean is against the spread); zeros if it is empty.

    Example:
        >>> std_mean(torch.tensor([1.0, 3.0])).tolist()
        [1.0, 2.0]
    """
    if values.numel() == 0:  # a rank's shard may be empty
        return values.new_zeros(2)
    return torch.stack(torch.std_mean(values, correction=0))


def mean_and_std_across_shards(
    std_means: list[Tensor], numels: list[int], likes: list[Tensor]
) -> list[tuple[float, float]]:
    """``(mean, standard deviation)`` (population) of each whole tensor from those of its shards, on the host.

    Each shard's mean and spread become ``[sum(x), sum(x^2), numel]`` in float64, which are summed across the shards
    of DTensors (plain tensors are not summed across ranks, and their numbers never leave the host again after the
    one transfer of ``std_means``).

    Args:
        std_means: per tensor, :func:`std_mean` of what this rank holds of it.
        numels: per tensor, the number of elements this rank holds of it.
        likes: the tensors (DTensors, or plain tensors).

    Returns:
        One ``(mean, std)`` per tensor; NaN for a tensor without elements.

    Example:
        >>> halves = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
        >>> mean_and_std_across_shards([std_mean(half) for half in halves], [2, 2], halves)
        [(1.5, 0.5), (3.5, 0.5)]
    """
    device = std_means[0].device
    statistics = torch.stack([s.to(device) for s in std_means])
    sharded = any(is_dtensor(like) for like in likes)
    if not sharded:
        statistics = statistics.cpu()  # the one transfer; the rest is float64 maths on 3 numbers per tensor
    std, mean = statistics.double().unbind(1)
    n = torch.tensor(numels, dtype=torch.float64, device=statistics.device)
    sums = torch.stack([n * mean, n * (std * std + mean * mean), n], dim=1)
    if sharded:
        _, summed = sum_across_shards(list(sums), likes)
        sums = torch.stack([row.to(summed[0].device) for row in summed]).cpu()
    result = []
    for total, squares, count in sums.tolist():
        mean_ = total / count if count else math.nan
        result.append((mean_, math.sqrt(max(squares / count - mean_ * mean_, 0.0)) if count else math.nan))
    return result
