"""The batch loop both runners share, on a tiny fake item type: skip / overwrite / error policies, a failing item
never stops the others (whatever the stage), batching with a one-by-one retry, summary counts and order, exit
status, ranks."""

import json
import os

import pytest
import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.batch import (BatchRunner, ProgressBar, end_batch, failure_reason, root_cause,
                                             stage)


class TextWriter:
    def __init__(self, output_dir, overwrite="skip"):
        self.output_dir, self.overwrite = output_dir, overwrite

    def path(self, name):
        return self.output_dir / f"{name}.txt"


class NumberRunner(BatchRunner):
    """Items ``{"name", "value", "size", "fail"}``: the network input is ``value`` repeated (2, size); the "network"
    sums the two channels and refuses negative values; ``fail`` makes a stage fail ("group", "load", "write")."""

    item_label, items_label, identity_key = "number", "numbers", "name"

    def __init__(self, items, writer, batch_size=1, **kwargs):
        super().__init__(items, writer, **kwargs)
        self.batch_size = batch_size
        self.calls, self.loaded = [], []

    def identity(self, item):
        return {"name": item["name"]}

    def item_name(self, item):
        return item["name"]

    def existing_output(self, item):
        path = self.writer.path(item["name"])
        return path if path.exists() else None

    def group_key(self, item):
        if item.get("fail") == "group":
            raise FusionInputError("unreadable header", path=f"{item['name']}.png")
        return item.get("size", 3)

    def load(self, item, timings):
        with stage(timings, "load"):
            self.loaded.append(item["name"])
            if item.get("fail") == "load":  # as MONAI wraps a transform's error
                try:
                    raise FusionInputError("truncated file", path=f"{item['name']}.png")
                except FusionInputError as err:
                    raise RuntimeError("applying transform <LoadImaged>") from err
            return {"value": item["value"]}, torch.full((2, item.get("size", 3)), float(item["value"]))

    def fuse(self, batch):
        self.calls.append(tuple(batch.shape))
        if (batch < 0).any():
            raise RuntimeError("negative input")
        return batch.sum(dim=1, keepdim=True)

    def write(self, item, data, pred, timings):
        with stage(timings, "write"):
            if item.get("fail") == "write":
                raise OSError("disk full")
            path = self.writer.path(item["name"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(float(pred[0, 0])))
        return {"output": str(path)}


def _items(*specs):
    return [{"name": name, "value": value, **extra} for name, value, extra in specs]


def _summary(tmp_path):
    return json.loads((tmp_path / "fusion_summary.json").read_text())


def test_every_item_is_fused_and_counted(tmp_path):
    items = _items(("b", 1, {}), ("a", 2, {}), ("c", 3, {}))
    summary = NumberRunner(items, TextWriter(tmp_path), progress=False).run()
    assert (summary["fused"], summary["skipped"], summary["failed"]) == (3, 0, 0)
    assert [r["name"] for r in summary["numbers"]] == ["b", "a", "c"]  # the given order
    assert (tmp_path / "a.txt").read_text() == "4.0"
    rec = summary["numbers"][0]
    assert rec["status"] == "fused" and set(rec["seconds"]) == {"load", "fuse", "write"}
    assert rec["total_seconds"] >= 0 and "rank" not in rec
    assert _summary(tmp_path) == json.loads(json.dumps(summary))


def test_a_failing_item_does_not_stop_the_others_whatever_the_stage(tmp_path, caplog):
    items = _items(("header", 1, {"fail": "group"}), ("ok1", 1, {}), ("truncated", 1, {"fail": "load"}),
                   ("negative", -1, {}), ("full", 1, {"fail": "write"}), ("ok2", 2, {}))
    runner = NumberRunner(items, TextWriter(tmp_path), progress=False)
    with caplog.at_level("ERROR"), pytest.raises(SystemExit, match="4 numbers failed"):
        runner.run()
    summary = _summary(tmp_path)
    assert (summary["fused"], summary["skipped"], summary["failed"]) == (2, 0, 4)
    status = {r["name"]: r for r in summary["numbers"]}
    assert status["ok1"]["status"] == status["ok2"]["status"] == "fused"
    # the root cause, naming the item (and the file for input errors), not MONAI's wrapper
    assert "header" in status["header"]["reason"] and "header.png" in status["header"]["reason"]
    truncated = status["truncated"]["reason"]
    assert "truncated.png" in truncated and "applying transform" not in truncated
    assert status["negative"]["reason"] == "number 'negative': RuntimeError: negative input"
    assert status["full"]["reason"] == "number 'full': OSError: disk full"
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["ok1.txt", "ok2.txt"]
    assert caplog.text.count("FAILED") == 4


def test_items_of_one_group_are_fused_together_up_to_batch_size(tmp_path):
    items = _items(("big1", 1, {"size": 7}), *((f"s{i}", 1, {}) for i in range(5)), ("big2", 1, {"size": 7}))
    runner = NumberRunner(items, TextWriter(tmp_path), batch_size=2, progress=False)
    summary = runner.run()
    assert summary["fused"] == 7
    assert sorted(runner.calls) == [(1, 2, 3), (2, 2, 3), (2, 2, 3), (2, 2, 7)]
    assert [r["name"] for r in summary["numbers"]] == [i["name"] for i in items]  # listed in the given order


def test_a_failed_batch_is_retried_one_by_one(tmp_path, caplog):
    items = _items(("a", 1, {}), ("bad", -1, {}), ("c", 1, {}))
    runner = NumberRunner(items, TextWriter(tmp_path), batch_size=3, fail_on_error=False, progress=False)
    with caplog.at_level("WARNING"):
        summary = runner.run()
    assert (summary["fused"], summary["failed"]) == (2, 1)
    assert runner.calls == [(3, 2, 3), (1, 2, 3), (1, 2, 3), (1, 2, 3)]
    assert "a batch of 3 numbers failed" in caplog.text


@pytest.mark.parametrize("policy", ["skip", "error", "overwrite"])
def test_existing_outputs_follow_the_overwrite_policy(tmp_path, policy):
    (tmp_path / "old.txt").write_text("kept")
    items = _items(("old", 1, {}), ("new", 1, {}))
    runner = NumberRunner(items, TextWriter(tmp_path, overwrite=policy), fail_on_error=False, progress=False)
    summary = runner.run()
    old = summary["numbers"][0]
    if policy == "skip":
        assert old["status"] == "skipped" and old["output"] == str(tmp_path / "old.txt")
        assert runner.loaded == ["new"] and (tmp_path / "old.txt").read_text() == "kept"
    elif policy == "error":
        assert old["status"] == "failed" and "output exists (overwrite='error')" in old["reason"]
        assert runner.loaded == ["new"] and (tmp_path / "old.txt").read_text() == "kept"
    else:
        assert old["status"] == "fused" and (tmp_path / "old.txt").read_text() == "2.0"
    assert summary["numbers"][1]["status"] == "fused"


def test_a_writer_without_a_policy_is_not_asked_about_existing_outputs(tmp_path):
    (tmp_path / "old.txt").write_text("kept")
    summary = NumberRunner(_items(("old", 1, {})), TextWriter(tmp_path, overwrite=None), progress=False).run()
    assert summary["fused"] == 1 and (tmp_path / "old.txt").read_text() == "2.0"


def test_discovery_errors_are_failed_items_and_set_the_exit_status(tmp_path):
    errors = [FusionInputError("no partner found", study="lonely", path="lonely.png")]
    runner = NumberRunner(_items(("a", 1, {})), TextWriter(tmp_path), errors=errors, progress=True)
    with pytest.raises(SystemExit, match="^1 number failed"):
        runner.run()
    first = _summary(tmp_path)["numbers"][0]
    assert first["name"] == "lonely" and first["status"] == "failed" and first["path"] == "lonely.png"
    assert "lonely" in first["reason"]


def test_independent_ranks_share_the_items_and_write_a_summary_each(tmp_path):
    items = _items(*((f"n{i}", i, {}) for i in range(5)))
    errors = [FusionInputError("broken", study="x")]
    for rank in (0, 1):
        summary = NumberRunner(items, TextWriter(tmp_path), errors=errors, rank=rank, world_size=2,
                               fail_on_error=False, progress=False).run()
        saved = json.loads((tmp_path / f"fusion_summary_rank{rank}.json").read_text())
        assert saved == json.loads(json.dumps(summary))
        fused = [r for r in summary["numbers"] if r["status"] == "fused"]
        assert [r["name"] for r in fused] == [f"n{i}" for i in range(rank, 5, 2)]
        assert {r["rank"] for r in fused} == {rank}
        assert summary["failed"] == (1 if rank == 0 else 0)  # discovery errors are reported once
    assert not (tmp_path / "fusion_summary.json").exists()


def test_helpers(tmp_path):
    wrapped = RuntimeError("applying transform")
    wrapped.__cause__ = FusionInputError("bad file", path="f.nii")
    assert isinstance(root_cause(wrapped), FusionInputError)
    assert "s1" in failure_reason(wrapped, "s1") and "f.nii" in failure_reason(wrapped, "s1")
    assert failure_reason(KeyError("x"), "p", "pair") == "pair 'p': KeyError: 'x'"
    summary = {"fused": 1, "skipped": 0, "failed": 2}
    assert end_batch(summary, tmp_path / "s.json", fail_on_error=False) is summary
    with pytest.raises(SystemExit, match="2 studies failed"):
        end_batch(summary, tmp_path / "s.json", fail_on_error=True)
    timings = {}
    with pytest.raises(ValueError), stage(timings, "load"):
        raise ValueError
    assert timings["load"] >= 0
    with ProgressBar(2, enabled=False) as bar:
        bar.update(2)


class ClaimingRunner(NumberRunner):
    """NumberRunner whose items each live in a folder of their own, under a claim."""

    def claim_path(self, item):
        return self.writer.output_dir / item["name"] / f".{item['name']}.txt.claim"


def test_claimed_items_are_skipped_naming_the_holder_and_leftovers_removed(tmp_path):
    from fusionmamba_med.io.claims import OutputClaim, RunInfo

    other = RunInfo(host="h", pid=1, started="t")
    held = OutputClaim(tmp_path / "b" / ".b.txt.claim", other)
    assert held.acquire()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".a.partial-0123abcd.txt").write_text("half")  # left by a killed run
    try:
        summary = ClaimingRunner(_items(("a", 1, {}), ("b", 2, {})), TextWriter(tmp_path), progress=False).run()
    finally:
        held.release()
    a, b = summary["numbers"]
    assert a["status"] == "fused" and not (tmp_path / "a" / ".a.partial-0123abcd.txt").exists()
    assert not (tmp_path / "a" / ".a.txt.claim").exists()
    assert b == {"name": "b", "status": "skipped", "reason": "claimed by another run: h:1:t", "claimed_by": "h:1:t"}
    assert summary["run"]["pid"] == os.getpid() and summary["run"]["run_id"].startswith(summary["run"]["host"])
    log = [json.loads(line) for line in (tmp_path / "fusion_summary.runs.jsonl").read_text().splitlines()]
    assert log == [json.loads(json.dumps(summary))] == [_summary(tmp_path)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
