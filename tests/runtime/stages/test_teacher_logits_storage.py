"""``teacher_logits`` storage: compressed and sharded output, reading it back (train, show,
export, a later stage), the loss within the codec's bound, fingerprints, resume after SIGKILL."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from kdlang.runtime.data import data_files, read_arrow
from kdlang.runtime.logit_codec import Codec

from tests.runtime.stages.support import cli, node, plan, run_recipe, write_recipe
from tests.runtime.stages.test_logit_codec import reference_bound

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------- the stage


ROWS = 7


def body(
    teacher: str, student: str, storage: str, shard_rows: int = 3, rows: str | None = None
) -> str:
    rows = rows or ", ".join(
        f'{{q: "What is {i} plus {i}?", a: "{i} + {i} = {2 * i}."}}' for i in range(ROWS)
    )
    return f"""
    model teacher = hf("{teacher}", batch_size = 2)
    model student = hf("{student}")
    dataset rows = inline([{rows}])
    prompt ask = "Q: {{{{ q }}}}\\nA:"
    stage soft = teacher_logits(rows) {{
      teacher = teacher  prompt = ask  target = a  top_k = 16  storage = {storage}
      shard_rows = {shard_rows}
    }}
    train distill {{
      student = student  data = soft  prompt = ask  target = a  max_steps = 1  batch = 7  lr = 1e-3
      loss forward_kl weight 1.0
    }}
    """


def run_stage(folder: Path, pair, storage: str, *extra: str, shard_rows: int = 3) -> dict:
    recipe = write_recipe(folder, body(pair.teacher, pair.student, storage, shard_rows))
    return run_recipe(recipe, *extra)


def output(report: dict, name: str = "soft") -> Path:
    return Path(node(report, name)["output"])


def decoded(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    table = read_arrow(folder)
    k = table.schema.field("topk_ids").type.value_type.list_size
    ids = [np.array(r, np.int64).reshape(-1, k) for r in table.column("topk_ids").to_pylist()]
    lps = [
        np.array(r, np.float32).reshape(-1, k) for r in table.column("topk_logprobs").to_pylist()
    ]
    return ids, lps


def test_compressed_shards_decode_to_the_captured_top_k(tmp_path, tiny_pair):
    fp32 = run_stage(tmp_path / "fp32", tiny_pair, "fp32", "--only", "soft")
    fp16 = run_stage(tmp_path / "fp16", tiny_pair, "fp16", "--only", "soft")
    storage = "compressed(exact = 4, bits = 8)"
    text = body(tiny_pair.teacher, tiny_pair.student, storage) + 'export soft to "soft.parquet"\n'
    packed = run_recipe(write_recipe(tmp_path / "c", text))
    files = data_files(output(packed))
    assert [f.name for f in files] == ["data.arrow", "data-00001.arrow", "data-00002.arrow"]
    counts = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all().num_rows for f in files]
    assert counts == [3, 3, 1]
    raw = pa.ipc.open_stream(pa.memory_map(str(files[0]))).read_all()
    assert "topk_packed" in raw.column_names and "topk_logprobs" not in raw.column_names
    ids32, lps32 = decoded(output(fp32))
    ids16, lps16 = decoded(output(fp16))
    idsc, lpsc = decoded(output(packed))
    codec = Codec(16, 4, 8, 16)
    for a, b, c, la, lb, lc in zip(ids32, ids16, idsc, lps32, lps16, lpsc, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(lb, la.astype(np.float16).astype(np.float32))
        assert lc[:, :4].tobytes() == lb[:, :4].tobytes()  # the exact part is fp16's, bit for bit
        delta = reference_bound(la, 4, 8)
        assert (np.abs(lc - la)[:, 4:].max(1) <= delta * (1 + 1e-6) + 1e-6).all()
        assert (codec.error_bound(la) == delta).all()
    stats = node(packed, "soft")["stats"]
    assert stats["shards"] == 3 and stats["target_tokens"] == sum(len(x) for x in ids32)
    # `kdlang show` reads every shard, decoded
    shown = cli("show", "soft", str(tmp_path / "c" / "recipe.kd"), "--cache",
                str(tmp_path / "c" / ".kdcache"), "--format", "jsonl")  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert shown.output.count('"q"') == ROWS and "topk_packed" not in shown.output
    # `export` writes the decoded columns of every shard
    import pyarrow.parquet as pq

    exported = pq.read_table(tmp_path / "c" / "soft.parquet")
    assert exported.num_rows == ROWS and "topk_packed" not in exported.column_names
    got = [
        np.array(r, np.float32).reshape(-1, 16)
        for r in exported.column("topk_logprobs").to_pylist()
    ]
    for a, b in zip(got, lpsc, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_train_on_compressed_storage_equals_fp16_within_the_bound(tmp_path, tiny_pair):
    fp32 = run_stage(tmp_path / "fp32", tiny_pair, "fp32", "--only", "soft")
    fp16 = run_stage(tmp_path / "fp16", tiny_pair, "fp16")
    packed = run_stage(tmp_path / "c", tiny_pair, "compressed(exact = 4, bits = 6)")
    _, lps32 = decoded(output(fp32))
    _, lps16 = decoded(output(fp16))
    # δ against the fp16 cache: the codec's bound plus fp16's own rounding of the tail
    delta = max(
        float(reference_bound(la, 4, 6).max()) + float(np.abs(la - lb)[:, 4:].max())
        for la, lb in zip(lps32, lps16, strict=True)
    )
    entropy = 0.0
    for lb in lps16:
        p = np.exp(lb.astype(np.float64))
        p /= p.sum(1, keepdims=True)
        entropy = max(entropy, float(-(p * np.log(p)).sum(1).max()))
    import json

    def first_loss(report):
        lines = (output(report, "distill") / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[0])["forward_kl"]

    base, found = first_loss(fp16), first_loss(packed)
    # |L̂ − L| ≤ (e^{2δ} − 1)(2H + 2δ + L) + 2δ (renormalised log-probs move by ≤ 2δ)
    bound = (math.exp(2 * delta) - 1) * (2 * entropy + 2 * delta + base) + 2 * delta
    assert 0 < abs(found - base) <= bound, (found, base, bound)


def test_a_conversation_train_on_compressed_storage_equals_fp32_within_the_bound(
    tmp_path, tiny_pair
):
    import json

    chats = [
        [
            {"role": "user", "content": "What is 12 plus 7?"},
            {"role": "assistant", "content": "12 + 7 = 19. #### 19"},
            {"role": "user", "content": "And 30 minus 4?"},
            {"role": "assistant", "content": "30 - 4 = 26. #### 26"},
        ],
        [
            {"role": "user", "content": "Write a short poem about the sea."},
            {"role": "assistant", "content": "The wind and the light of the morning."},
        ],
    ]
    data = json.dumps([{"chat": chat} for chat in chats])
    reports, first = {}, {}
    for storage in ("fp32", "compressed(exact = 2, bits = 6)"):
        text = (
            f'model teacher = hf("{tiny_pair.teacher}")\nmodel student = hf("{tiny_pair.student}")\n'
            f"dataset chats = inline({data}) {{ messages = chat }}\n"
            "stage soft = teacher_logits(chats) { teacher = teacher  target = chat  top_k = 8\n"
            f"  storage = {storage}  shard_rows = 1 }}\n"
            "train distill { student = student  data = soft  target = chat  max_steps = 1\n"
            "  batch = 2  lr = 1e-3\n  loss forward_kl weight 1.0\n}\n"
        )
        folder = tmp_path / storage.split("(")[0]
        reports[storage] = report = run_recipe(write_recipe(folder, text))
        lines = (output(report, "distill") / "metrics.jsonl").read_text().splitlines()
        first[storage] = json.loads(lines[0])["forward_kl"]
    _, exact = decoded(output(reports["fp32"]))
    _, packed = decoded(output(reports["compressed(exact = 2, bits = 6)"]))
    assert len(data_files(output(reports["fp32"]))) == 2  # one shard a conversation
    delta = max(float(reference_bound(la, 2, 6).max()) for la in exact)
    for la, lc in zip(exact, packed, strict=True):
        assert lc[:, :2].tobytes() == la[:, :2].astype(np.float16).astype(np.float32).tobytes()
        assert (np.abs(lc - la)[:, 2:] <= delta * (1 + 1e-6) + 1e-6).all()
    p = [np.exp(la.astype(np.float64)) for la in exact]
    entropy = max(
        float(-(q / q.sum(1, keepdims=True) * np.log(q / q.sum(1, keepdims=True))).sum(1).max())
        for q in p
    )
    base, found = first["fp32"], first["compressed(exact = 2, bits = 6)"]
    bound = (math.exp(2 * delta) - 1) * (2 * entropy + 2 * delta + base) + 2 * delta
    assert abs(found - base) <= bound, (found, base, bound)


def test_storage_and_shard_rows_change_the_fingerprints(tmp_path, tiny_pair):
    plans = {}
    for name, storage, shard_rows in [
        ("a", "fp16", 3),
        ("b", "compressed(exact = 4, bits = 8)", 3),
        ("c", "compressed(exact = 4, bits = 6)", 3),
        ("d", "fp16", 4),
        ("e", "fp16", 3),
    ]:
        recipe = write_recipe(
            tmp_path / name, body(tiny_pair.teacher, tiny_pair.student, storage, shard_rows)
        )
        plans[name] = {n: plan(recipe)[n]["fingerprint"] for n in ("soft", "distill")}
    for changed in "bcd":
        assert plans[changed]["soft"] != plans["a"]["soft"]
        assert plans[changed]["distill"] != plans["a"]["distill"]
    assert plans["e"] == plans["a"]


def test_a_compressed_cache_runs_again_when_its_storage_changes(tmp_path, tiny_pair):
    folder = tmp_path / "r"
    recipe = write_recipe(folder, body(tiny_pair.teacher, tiny_pair.student, "fp16"))
    run_recipe(recipe, "--only", "soft")
    recipe.write_text(
        recipe.read_text().replace("storage = fp16", "storage = compressed(exact = 2, bits = 8)")
    )
    assert plan(recipe)["soft"]["status"] == "will run"
    again = run_recipe(recipe, "--only", "soft")
    assert node(again, "soft")["status"] != "cached"
    assert (
        "topk_packed"
        in pa.ipc.open_stream(pa.memory_map(str(output(again) / "data.arrow")))
        .read_all()
        .column_names
    )


def filtered_train(tmp_path: Path, pair, shard_rows: int) -> dict:
    text = body(pair.teacher, pair.student, "compressed(exact = 4, bits = 8)", shard_rows)
    text = text.replace("data = soft", "data = kept")
    text += "stage kept = filter(soft) { keep len(a) > 10 }\n"  # the rows of 5, 6 (of 0..6)
    return run_recipe(write_recipe(tmp_path, text))


def test_a_stage_after_a_compressed_one_passes_the_codec_on(tmp_path, tiny_pair):
    report = filtered_train(tmp_path, tiny_pair, 100)
    assert node(report, "kept")["rows_out"] == 2
    assert node(report, "distill")["stats"]["rows_in"] == 2
    table = read_arrow(output(report, "kept"))
    assert table.column("q").to_pylist() == ["What is 5 plus 5?", "What is 6 plus 6?"]
    _, lps = decoded(output(report, "soft"))
    got = [
        np.array(r, np.float32).reshape(-1, 16) for r in table.column("topk_logprobs").to_pylist()
    ]
    for a, b in zip(got, lps[5:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_stage_after_a_sharded_one_reads_every_shard(tmp_path, tiny_pair):
    report = filtered_train(tmp_path, tiny_pair, 3)  # rows 5 and 6 are in shards 2 and 3
    assert node(report, "kept")["rows_out"] == 2


# ---------------------------------------------------------------- resume


def kdlang_run(recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(recipe.parent)]
    return subprocess.Popen(
        [*command, "--device", "cpu", "--only", "soft"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_a_killed_sharded_capture_resumes_at_the_first_shard_not_written(tmp_path, tiny_pair):
    storage = "compressed(exact = 4, bits = 8)"
    rows = ", ".join(f'{{q: "Question {i}?", a: "{"word " * (i % 5 + 1)}end."}}' for i in range(60))
    text = body(tiny_pair.teacher, tiny_pair.student, storage, shard_rows=4, rows=rows)
    crashed = write_recipe(tmp_path / "crashed", text)
    reference = write_recipe(tmp_path / "ref", text)
    fingerprint = plan(crashed)["soft"]["fingerprint"]
    progress = tmp_path / "crashed" / ".kdcache" / "progress" / fingerprint
    process = kdlang_run(crashed)
    deadline = time.monotonic() + 90
    while not (progress / "data-00002.arrow").exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before its third shard: {process.stderr.read().decode()}")
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    written = sorted(p.name for p in progress.glob("data*.arrow"))
    assert "data.arrow" in written and len(written) < 15  # killed before the end
    # the chunks of written shards are gone (the last one's may not be, when the kill came
    # between writing the shard and deleting its chunks)
    chunks = sorted(progress.glob("chunk-*.npz"))
    assert all(int(c.stem.split("-")[1]) + 2 > 4 * (len(written) - 1) for c in chunks)
    assert plan(crashed)["soft"]["status"] == "will run"  # nothing partial committed
    _, errors = (resumed := kdlang_run(crashed)).communicate(timeout=120)
    assert resumed.returncode == 0, errors.decode()
    uninterrupted = run_recipe(reference, "--only", "soft")
    import json

    report = json.loads(next((tmp_path / "crashed" / "runs").glob("*/report.json")).read_text())
    stats = node(report, "soft")["stats"]
    assert stats["resumed_rows"] >= 4 * len(written)
    mine, theirs = output(report), output(uninterrupted)
    names = sorted(p.name for p in mine.glob("data*.arrow"))
    assert names == sorted(p.name for p in theirs.glob("data*.arrow")) and len(names) == 15
    for name in names:
        assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
    assert not progress.exists()
