"""``log_every``: the records of every step are written in windows of ``log_every`` steps (and
before each checkpoint, and at the end), and the progress bar shows each window's loss."""

from __future__ import annotations

import json

import pytest
from kdlang.runtime.train import metrics as metrics_module

from tests.runtime.train.support import metrics, models, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 10  batch = 2
  log_every = 4  checkpoint_every = 3
  loss sft weight 1.0
}
"""


def test_records_are_written_every_log_every_steps_and_before_checkpoints(
    tmp_path, tiny_pair, monkeypatch
):
    windows: list[list[int]] = []
    extend = metrics_module.MetricsLog.extend

    def watched(self, records):
        windows.append([r["step"] for r in records])
        extend(self, records)

    monkeypatch.setattr(metrics_module.MetricsLog, "extend", watched)
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY))
    # writes after steps 3 (checkpoint), 4 (log_every), 6 (checkpoint), 8 (log_every),
    # 9 (checkpoint) and 10 (the end)
    assert windows == [[0, 1, 2], [3], [4, 5], [6, 7], [8], [9]]
    assert [r["step"] for r in metrics(report, "t")] == list(range(10))


def test_the_progress_bar_shows_the_mean_loss_of_each_window(tmp_path, tiny_pair, monkeypatch):
    from kdlang.runtime import context

    shown: list[tuple[int, str | None]] = []
    advance = context.StageContext.advance

    def watched(self, count=1, status=None):
        shown.append((count, status))
        advance(self, count, status)

    monkeypatch.setattr(context.StageContext, "advance", watched)
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY))
    records = metrics(report, "t")
    losses = [r["loss"] for r in records]
    expected = [(3, losses[0:3]), (1, losses[3:4]), (2, losses[4:6]), (2, losses[6:8])]
    expected += [(1, losses[8:9]), (1, losses[9:10])]
    assert shown == [(n, f"loss {sum(w) / len(w):.4g}") for n, w in expected]


def test_two_identical_runs_commit_the_same_content_hash(tmp_path, tiny_pair):
    # Step times go to timings.jsonl and TensorBoard events carry wall times: neither is in the
    # content hash, so the same recipe on the same inputs commits the same hash.
    from kdlang.runtime.cache import tree_hash

    from tests.runtime.train.support import artifact

    reports = [run_recipe(write_recipe(tmp_path / name, models(tiny_pair) + BODY)) for name in "ab"]
    folders = [artifact(report, "t") for report in reports]
    manifests = [json.loads((f / "manifest.json").read_text(encoding="utf-8")) for f in folders]
    assert manifests[0]["content_hash"] == manifests[1]["content_hash"]
    assert [tree_hash(f) for f in folders] == [m["content_hash"] for m in manifests]
    for folder in folders:
        records = metrics_module.read_metrics(folder / "metrics.jsonl")
        assert [r["step"] for r in records] == list(range(10))
        assert all(r["seconds"] >= 0 for r in records)  # merged back from timings.jsonl
        plain = (folder / "metrics.jsonl").read_text(encoding="utf-8")
        assert '"seconds"' not in plain
        timings = (folder / "timings.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["step"] for line in timings] == list(range(10))
    # the metrics files are byte for byte the same; the timings are not part of the hash
    texts = [(f / "metrics.jsonl").read_bytes() for f in folders]
    assert texts[0] == texts[1]
    (folders[0] / "timings.jsonl").write_text("changed\n", encoding="utf-8")
    assert tree_hash(folders[0]) == manifests[0]["content_hash"]
    (folders[0] / "metrics.jsonl").write_text("changed\n", encoding="utf-8")
    assert tree_hash(folders[0]) != manifests[0]["content_hash"]
