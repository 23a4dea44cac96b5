"""Training pairs: one or more (dir_a, dir_b) folder pairs -> a training list and a fixed held-out validation list.

Each source is a dictionary ``{"dir_a": ..., "dir_b": ..., "name": optional label, "datalist": optional}``; A is the
anatomy / visible image (network channel 0), B the other modality (channel 1). Item names are prefixed with the
source label (default: the folder that holds ``dir_a`` and ``dir_b``, e.g. ``"PET-MRI/25015"``) so that sources with
the same file names stay apart. The split is deterministic: names are sorted, shuffled with ``random.Random(seed)``
and the first ``holdout`` of each source are held out. ``holdout_datasets`` holds out whole datasets instead (every
pair whose file name starts with ``<dataset>_``, as in irvis_train), to validate on data unlike the training data.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fusionmamba_med.errors import FusionInputError

__all__ = ["source_label", "split_holdout", "training_pairs"]

logger = logging.getLogger(__name__)


def source_label(source: Mapping[str, Any]) -> str:
    """The label of a source: its ``"name"``, else the folder holding ``dir_a`` and ``dir_b``
    (``harvard/PET-MRI/{MRI,PET}`` -> ``PET-MRI``)."""
    if source.get("name"):
        return str(source["name"])
    a, b = Path(source["dir_a"]).resolve(), Path(source["dir_b"]).resolve()
    common = Path(os.path.commonpath([a, b]))
    return common.name or a.name


def split_holdout(items: Sequence[Mapping], holdout: int | float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Split ``items`` (dictionaries with a ``"name"``) into (training, held out), deterministically.

    ``holdout`` is a count (int) or a fraction of the items (float in [0, 1)). The items are sorted by name, shuffled
    with ``random.Random(seed)``, and the first ones are held out; both lists come back sorted by name.
    """
    if isinstance(holdout, bool) or holdout < 0:
        raise ValueError(f"holdout must be a count >= 0 or a fraction in [0, 1), got {holdout!r}")
    ordered = sorted((dict(i) for i in items), key=lambda i: i["name"])
    n_val = int(holdout) if isinstance(holdout, int) else int(round(float(holdout) * len(ordered)))
    if isinstance(holdout, float) and holdout >= 1:
        raise ValueError(f"a fractional holdout must be < 1, got {holdout}")
    if ordered and n_val >= len(ordered):
        raise ValueError(f"holdout {holdout!r} leaves no training pairs out of {len(ordered)}")
    order = list(range(len(ordered)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [item for i, item in enumerate(ordered) if i not in held]
    val = [item for i, item in enumerate(ordered) if i in held]
    return train, val


def training_pairs(
    sources: Sequence[Mapping[str, Any]],
    holdout: int | float = 4,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    holdout_datasets: Sequence[str] = (),
) -> dict[str, list[dict]]:
    """Find the pairs of every source and hold out ``holdout`` of each source for validation.

    Args:
        sources: ``[{"dir_a", "dir_b", "name"?, "datalist"?}, ...]``; folders are paired by file name
            (:func:`fusionmamba_med.io.pairs.discover_pairs`).
        holdout: held-out pairs per source, a count or a fraction (see :func:`split_holdout`).
        seed: seed of the shuffle that picks the held-out pairs.
        split_file: if given, the split (held-out and training names) is written there as JSON, atomically.
        holdout_datasets: datasets held out whole (:func:`~fusionmamba_med.training.sampling.pair_group` "dataset",
            e.g. ``["vifb"]``); ``holdout`` then applies to the remaining pairs of each source.

    Returns:
        ``{"training": [{"name", "a", "b"}, ...], "validation": [...]}``.

    Raises:
        FusionInputError: no source gave a single pair, or a dataset of ``holdout_datasets`` has none.
    """
    from fusionmamba_med.io.pairs import discover_pairs
    from fusionmamba_med.training.sampling import pair_group

    held_datasets = set(holdout_datasets)
    found_datasets: set[str] = set()

    if isinstance(sources, Mapping):
        sources = [sources]
    train: list[dict] = []
    val: list[dict] = []
    per_source: dict[str, dict[str, int]] = {}
    for source in sources:
        label = source_label(source)
        items, errors = discover_pairs(source["dir_a"], source["dir_b"], datalist=source.get("datalist"))
        for err in errors:
            logger.warning("training pairs, source '%s': %s", label, err)
        items = [{**item, "name": f"{label}/{item['name']}", "source": label} for item in items]
        if not items:
            logger.warning("training pairs: no pairs in source '%s' (%s, %s)", label, source["dir_a"], source["dir_b"])
            continue
        whole = [item for item in items if pair_group(item, "dataset") in held_datasets]
        rest = [item for item in items if pair_group(item, "dataset") not in held_datasets]
        found_datasets |= {pair_group(item, "dataset") for item in whole}
        src_train, src_val = split_holdout(rest, holdout, seed)
        src_val = sorted(src_val + whole, key=lambda i: i["name"])
        train += src_train
        val += src_val
        per_source[label] = {"training": len(src_train), "validation": len(src_val)}
    if not train:
        raise FusionInputError(
            "no training pairs found in " + ", ".join(f"({s['dir_a']}, {s['dir_b']})" for s in sources)
        )
    if held_datasets - found_datasets:
        raise FusionInputError(f"holdout_datasets: no pairs of {sorted(held_datasets - found_datasets)} in "
                               + ", ".join(f"({s['dir_a']}, {s['dir_b']})" for s in sources))
    logger.info("training pairs: %d for training, %d held out (%s)", len(train), len(val), per_source)
    split = {"training": train, "validation": val}
    if split_file is not None:
        from fusionmamba_med.io.atomic import write_summary

        write_summary(
            split_file,
            {
                "seed": seed,
                "holdout": holdout,
                "holdout_datasets": sorted(held_datasets),
                "sources": [{**dict(s), "name": source_label(s)} for s in sources],
                "counts": per_source,
                "validation": [i["name"] for i in val],
                "training": [i["name"] for i in train],
            },
        )
    return split
