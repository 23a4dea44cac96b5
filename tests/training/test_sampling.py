from collections import Counter

import pytest

from fusionmamba_med.training import pair_group, source_balanced_sampler


def _items(sizes: dict[str, int]) -> list[dict]:
    return [{"name": f"irvis_train/{dataset}_{i:05d}", "source": "irvis_train"}
            for dataset, n in sizes.items() for i in range(n)]


def test_pair_group_by_source_or_by_dataset_prefix():
    item = {"name": "irvis_train/roadscene_FLIR_00006", "source": "irvis_train"}
    assert pair_group(item) == "irvis_train"
    assert pair_group(item, "dataset") == "roadscene"
    with pytest.raises(ValueError, match="group"):
        pair_group(item, "folder")


def test_each_dataset_is_drawn_about_equally_often():
    items = _items({"roadscene": 170, "llvip": 50, "vifb": 20, "tiny": 2})
    sampler = source_balanced_sampler(items, group="dataset", min_group_size=10)
    assert len(sampler) == len(items)
    drawn = Counter(pair_group(items[i], "dataset") for _ in range(20) for i in sampler)
    total = 20 * len(items)
    for dataset in ("roadscene", "llvip", "vifb"):  # a third each, less the tiny group's share
        assert drawn[dataset] / total == pytest.approx(1 / 3, abs=0.03)
    # the 2-pair group is not boosted: each of its pairs as often as a roadscene pair
    assert drawn["tiny"] / 2 == pytest.approx(drawn["roadscene"] / 170, rel=0.5)


def test_the_seed_fixes_the_draws():
    items = _items({"a": 30, "b": 5})
    assert list(source_balanced_sampler(items, seed=3)) == list(source_balanced_sampler(items, seed=3))
    assert list(source_balanced_sampler(items, seed=3)) != list(source_balanced_sampler(items, seed=4))


def test_balance_tempers_the_draws_between_by_size_and_equal():
    items = _items({"roadscene": 160, "vifb": 40})
    for balance, vifb_share in ((0.0, 40 / 200), (0.5, 40**0.5 / (40**0.5 + 160**0.5)), (1.0, 0.5)):
        sampler = source_balanced_sampler(items, group="dataset", balance=balance)
        drawn = Counter(pair_group(items[i], "dataset") for _ in range(20) for i in sampler)
        assert drawn["vifb"] / (20 * len(items)) == pytest.approx(vifb_share, abs=0.03)
    with pytest.raises(ValueError, match="balance"):
        source_balanced_sampler(items, balance=1.5)


def test_multi_gpu_ranks_draw_disjoint_shards_with_the_same_balance():
    items = _items({"roadscene": 170, "vifb": 30})
    ranks = [source_balanced_sampler(items, group="dataset", num_replicas=2, rank=r) for r in (0, 1)]
    assert [len(s) for s in ranks] == [100, 100]
    drawn = Counter()
    for epoch in range(20):
        per_rank = []
        for sampler in ranks:
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
        assert not set(per_rank[0]) & set(per_rank[1])  # each process draws from its own shard
        drawn.update(pair_group(items[i], "dataset") for indices in per_rank for i in indices)
    assert drawn["vifb"] / sum(drawn.values()) == pytest.approx(0.5, abs=0.05)  # balanced over both processes
    ranks[0].set_epoch(0)
    first = list(ranks[0])
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != first  # every epoch reshuffles the shards
