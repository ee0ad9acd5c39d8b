"""``teacher_logits``: the cached top-k equals the teacher's scores, stored compactly; a
black-box teacher's token strings map to the student's ids; training reads the cache."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from kdlang.runtime.errors import RunError
from kdlang.runtime.stages.teacher_logits import TokenMapper

from tests.runtime.train.support import artifact, metrics, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(180)

ROWS = [
    {"q": "What is 12 plus 7?", "a": "12 + 7 = 19. #### 19"},
    {"q": "What is 30 minus 4?", "a": "30 - 4 = 26."},
    {"q": "Write a short poem about the sea.", "a": "The wind and the light of the morning."},
]
DATA = """
dataset rows = inline([
  {q: "What is 12 plus 7?", a: "12 + 7 = 19. #### 19"},
  {q: "What is 30 minus 4?", a: "30 - 4 = 26."},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning."},
])
prompt ask = \"\"\"Q: {{ q }}
A:\"\"\"
"""


def table(folder) -> pa.Table:
    with pa.memory_map(str(folder / "data.arrow")) as source:
        return pa.ipc.open_stream(source).read_all()


def stage_recipe(tmp_path, teacher: str, student: str, top_k: int, max_length: int = 1024):
    body = f"""
    model teacher = {teacher}
    model student = hf("{student}")
    {DATA}
    stage soft = teacher_logits(rows) {{
      teacher = teacher  prompt = ask  target = a  top_k = {top_k}  max_length = {max_length}
    }}
    train distill {{
      student = student  data = soft  prompt = ask  target = a  max_steps = 6  batch = 3
      lr = 3e-3
      loss forward_kl weight 1.0
    }}
    """
    return write_recipe(tmp_path, body)


def test_white_box_top_k_is_the_teachers_and_compact(tmp_path, tiny_pair):
    from kdlang.runtime.teachers.hf import HFTeacher
    from kdlang.runtime.train.models import vocab_digest

    recipe = stage_recipe(tmp_path, f'hf("{tiny_pair.teacher}")', tiny_pair.student, 5)
    report = run_recipe(recipe)
    data = table(artifact(report, "soft"))
    assert data.schema.field("topk_ids").type == pa.list_(pa.list_(pa.int32(), 5))
    assert data.schema.field("topk_logprobs").type == pa.list_(pa.list_(pa.float16(), 5))
    assert data.schema.field("topk_target_ids").type == pa.list_(pa.int32())
    assert data.column("q").to_pylist() == [r["q"] for r in ROWS]
    teacher = HFTeacher(tiny_pair.teacher, device="cpu")
    prompts = [f"Q: {r['q']}\nA:" for r in ROWS]
    expected = teacher.topk_logprobs(prompts, [r["a"] + "<|eos|>" for r in ROWS], 5)
    for row, want in enumerate(expected):
        ids = np.array(data.column("topk_ids")[row].as_py())
        lps = np.array(data.column("topk_logprobs")[row].as_py(), dtype=np.float32)
        targets = data.column("topk_target_ids")[row].as_py()
        assert targets == want.target_ids.tolist() and targets[-1] == teacher.tokenizer.eos_token_id
        np.testing.assert_array_equal(ids, want.ids.numpy())
        np.testing.assert_allclose(lps, want.logprobs.numpy(), rtol=1e-3, atol=1e-3)
    manifest = node(report, "soft")
    assert manifest["rows_out"] == 3
    soft_manifest = (artifact(report, "soft") / "manifest.json").read_text()
    assert vocab_digest(teacher.tokenizer) in soft_manifest
    records = metrics(report, "distill")
    assert records[-1]["forward_kl"] < records[0]["forward_kl"]


def test_max_length_keeps_the_first_target_tokens(tmp_path, tiny_pair):
    from kdlang.runtime.teachers.prompts import encode_prompt
    from transformers import AutoTokenizer

    recipe = stage_recipe(tmp_path, f'hf("{tiny_pair.teacher}")', tiny_pair.student, 3, 40)
    data = table(artifact(run_recipe(recipe, "--only", "soft"), "soft"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.teacher)
    for row, source in enumerate(ROWS):
        prompt = encode_prompt(tokenizer, f"Q: {source['q']}\nA:", None, chat=True)
        target = tokenizer(source["a"] + "<|eos|>", add_special_tokens=False)["input_ids"]
        kept = data.column("topk_target_ids")[row].as_py()
        assert kept == target[: max(0, 40 - len(prompt))]
        assert len(data.column("topk_ids")[row].as_py()) == len(kept)
    assert any(len(data.column("topk_target_ids")[r].as_py()) < 10 for r in range(3))


def test_black_box_teacher_gives_the_white_box_top_k(tmp_path, tiny_gpt2_dir, monkeypatch):
    from kdlang.runtime.teachers.hf import HFTeacher

    from tests.fixtures.openai_server import FakeOpenAIServer, HFServedModel

    white = run_recipe(stage_recipe(tmp_path / "white", f'hf("{tiny_gpt2_dir}")', tiny_gpt2_dir, 4))
    expected = table(artifact(white, "soft"))
    served = HFTeacher(tiny_gpt2_dir, device="cpu")
    api = 'openai("tiny", base_url = env("KD_TEST_BASE_URL"), chat = false)'
    with FakeOpenAIServer(HFServedModel(served)) as server:
        monkeypatch.setenv("KD_TEST_BASE_URL", server.url)
        black = run_recipe(stage_recipe(tmp_path / "black", api, tiny_gpt2_dir, 4))
    found = table(artifact(black, "soft"))
    for row in range(len(ROWS)):
        # The API scores the target text; the white-box teacher also scores the EOS after it.
        want = expected.column("topk_target_ids")[row].as_py()[:-1]
        assert found.column("topk_target_ids")[row].as_py() == want
        np.testing.assert_array_equal(
            np.array(found.column("topk_ids")[row].as_py()),
            np.array(expected.column("topk_ids")[row].as_py())[:-1],
        )
        np.testing.assert_allclose(
            np.array(found.column("topk_logprobs")[row].as_py(), np.float32),
            np.array(expected.column("topk_logprobs")[row].as_py(), np.float32)[:-1],
            atol=2e-3,
        )
    assert node(black, "distill")["status"] == "ran"


def test_token_mapper_maps_merges_pads_and_refuses(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    vocab = tokenizer.get_vocab()
    mapper = TokenMapper(tokenizer)
    raw = tokenizer.convert_ids_to_tokens(tokenizer(" the", add_special_tokens=False)["input_ids"])
    assert mapper.id(raw[0]) == vocab[raw[0]]
    assert mapper.id(" the") == vocab[raw[0]]  # decoded text of one token
    ids, values = mapper.row([raw[0], " the", "", ""], np.log(np.array([0.5, 0.25, 0.1, 0.1])))
    assert ids[0] == vocab[raw[0]] and values[0] == pytest.approx(np.log(0.75))
    assert len(set(ids.tolist())) == 4 and np.isneginf(values[1:]).all()
    with pytest.raises(RunError, match="not one"):
        mapper.id("distillation moves knowledge")
