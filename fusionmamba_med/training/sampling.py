"""Training-pair sampling: draw the groups of a mixed training set (sources, or the datasets inside one source)
equally often instead of in proportion to their size."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

import torch
from monai.data import DistributedWeightedRandomSampler
from torch.utils.data import WeightedRandomSampler

__all__ = ["pair_group", "source_balanced_sampler"]

logger = logging.getLogger(__name__)


def pair_group(item: Mapping, group: str = "source") -> str:
    """The group of a training pair: ``"source"``, its training source (``item["source"]``, e.g. ``"PET-MRI"``), or
    ``"dataset"``, the part of its file name before the first underscore (``"irvis_train/roadscene_FLIR_00006"`` ->
    ``"roadscene"``: irvis_train names each file after the dataset it comes from)."""
    if group == "source":
        return str(item["source"])
    if group == "dataset":
        return PurePosixPath(str(item["name"])).name.split("_")[0]
    raise ValueError(f"group must be 'source' or 'dataset', got {group!r}")


def source_balanced_sampler(items: Sequence[Mapping], group: str = "source", min_group_size: int = 1,
                            seed: int = 0, balance: float = 1.0, num_replicas: int | None = None,
                            rank: int | None = None) -> WeightedRandomSampler | DistributedWeightedRandomSampler:
    """A sampler (``train_sampler`` of a bundle's train.json) that draws ``len(items)`` pairs per epoch, with
    replacement, each group equally often: a pair's weight is 1 / the size of its group. Pairs of groups smaller than
    ``min_group_size`` are not boosted (drawn as often as a pair of the largest group), so that a handful of pairs is
    not repeated many times an epoch. ``seed`` fixes the draws.

    ``balance`` tempers it: a pair's weight is size ** -balance, so a group of n pairs is drawn in proportion to
    n ** (1 - balance): 1 draws the groups equally often, 0 in proportion to their size (as without a sampler),
    0.5 in proportion to the square root of their size.

    ``num_replicas`` and ``rank`` (multi-GPU training, ``configs/multi_gpu_train.json``: ``num_replicas=@world_size,
    rank=@rank``) give MONAI's :class:`~monai.data.DistributedWeightedRandomSampler` instead: each process draws
    ``len(items) / num_replicas`` pairs, with the same weights, from its own shard of the pairs (reshuffled every
    epoch).
    """
    if not 0.0 <= float(balance) <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    groups = [pair_group(item, group) for item in items]
    if not groups:
        raise ValueError("source_balanced_sampler needs at least one training pair")
    sizes = Counter(groups)
    largest = max(sizes.values())
    weights = [float(sizes[g] if sizes[g] >= min_group_size else largest) ** -float(balance) for g in groups]
    total = sum(weights)
    shares = Counter()
    for g, w in zip(groups, weights):
        shares[g] += w / total
    logger.info("source_balanced_sampler: %s pairs by %s, drawn with shares %s", dict(sizes), group,
                {g: round(v, 3) for g, v in shares.items()})
    generator = torch.Generator()
    if num_replicas is not None:
        generator.manual_seed(seed + int(rank or 0))
        return DistributedWeightedRandomSampler(items, weights, num_samples_per_rank=math.ceil(len(items) / num_replicas),
                                                generator=generator, num_replicas=num_replicas, rank=rank, seed=seed)
    generator.manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=len(items), replacement=True, generator=generator)
