"""The shipped quickstart assets: they load offline, agree with each other, and the data is right.

Nothing here trains; the checks of the task data recompute every answer without the code that
wrote it.
"""

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "recipes" / "assets"
DATA = ROOT / "recipes" / "data" / "digits"
MODELS = ("tiny-teacher", "tiny-student")
QUESTION = re.compile(r"^which digits do (\d{6}) and (\d{6}) share\?$")
PROMPT = "Q: {question}\nA:"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbers(question: str) -> tuple[str, str]:
    match = QUESTION.match(question)
    assert match, question
    return match.group(1), match.group(2)


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    return {
        name: AutoTokenizer.from_pretrained(ASSETS / name, local_files_only=True) for name in MODELS
    }


@pytest.fixture(scope="module")
def models():
    from transformers import AutoModelForCausalLM

    return {
        name: AutoModelForCausalLM.from_pretrained(ASSETS / name, local_files_only=True).eval()
        for name in MODELS
    }


@pytest.fixture(scope="module")
def splits():
    return {name: read_jsonl(DATA / f"{name}.jsonl") for name in ("train", "test")}


def test_assets_folder_is_not_a_python_package():
    assert not (ASSETS / "__init__.py").exists()


def test_hashes_in_assets_json_match_the_files():
    report = json.loads((ASSETS / "assets.json").read_text())
    expected = {ASSETS / rel: digest for rel, digest in report["sha256"].items()}
    expected |= {DATA / name: digest for name, digest in report["data_sha256"].items()}
    for model in MODELS:
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            assert ASSETS / model / name in expected
    for path, digest in expected.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path


def test_models_are_small_enough_to_commit():
    assert (ASSETS / "tiny-teacher" / "model.safetensors").stat().st_size <= 4 * 2**20
    assert (ASSETS / "tiny-student" / "model.safetensors").stat().st_size <= 2**20


def test_teacher_and_student_share_one_vocabulary(tokenizers, models):
    teacher_tok, student_tok = tokenizers["tiny-teacher"], tokenizers["tiny-student"]
    assert teacher_tok.get_vocab() == student_tok.get_vocab()
    for name in MODELS:
        tok, config = tokenizers[name], models[name].config
        assert config.vocab_size == len(tok)
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
            tok.bos_token_id,
            tok.eos_token_id,
            tok.pad_token_id,
        )
        assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    teacher, student = models["tiny-teacher"].config, models["tiny-student"].config
    assert student.n_layer < teacher.n_layer and student.n_embd < teacher.n_embd


def test_every_digit_is_one_token_and_splits_are_consistent(tokenizers):
    tok = tokenizers["tiny-teacher"]
    digit_ids = set()
    for digit in "0123456789":
        ids = tok(digit, add_special_tokens=False).input_ids
        assert len(ids) == 1
        digit_ids.add(ids[0])
    assert len(digit_ids) == 10
    prompt = PROMPT.format(question="which digits do 690243 and 647281 share?")
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    target_ids = tok(" 624", add_special_tokens=False).input_ids
    whole = tok(prompt + " 624", add_special_tokens=False).input_ids
    assert whole == prompt_ids + target_ids
    assert tok.convert_ids_to_tokens(target_ids) == [" ", "6", "2", "4"]
    assert tok.decode(whole) == prompt + " 624"
    assert (
        tok.unk_token_id not in tok("Any other Question: 42!", add_special_tokens=False).input_ids
    )


def test_answers_are_the_shared_digits(splits):
    for rows in splits.values():
        for r in rows:
            a, b = numbers(r["question"])
            shared = set(a) & set(b)
            assert shared, r
            assert r["answer"] == "".join(sorted(shared))
            assert r["digits"] == sorted(int(d) for d in shared)


def test_splits_are_disjoint_and_free_of_duplicates(splits):
    keys = {
        name: [frozenset(numbers(r["question"])) for r in rows] for name, rows in splits.items()
    }
    for name, found in keys.items():
        assert len(found) == len(set(found)), name
    assert not set(keys["train"]) & set(keys["test"])
    assert len(keys["train"]) >= 500 and len(keys["test"]) >= 200


def test_every_answer_size_is_common_in_both_splits(splits):
    for rows in splits.values():
        sizes = [len(r["answer"]) for r in rows]
        for size in range(1, 6):
            assert sizes.count(size) >= 0.05 * len(rows)


def test_teacher_answers_held_out_questions_and_the_student_does_not(tokenizers, models, splits):
    import torch

    tok = tokenizers["tiny-teacher"]
    rows = splits["test"][:64]
    enc = tok(
        [PROMPT.format(question=r["question"]) for r in rows],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )

    def correct(name: str) -> int:
        with torch.no_grad():
            out = models[name].generate(**enc, do_sample=False, max_new_tokens=12)
        texts = tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        # correct = the digits written, whitespace aside, are the shared ones, each once
        found = ["".join(t.split()) for t in texts]
        return sum(
            len(set(f)) == len(f) and set(f) == set(r["answer"])
            for f, r in zip(found, rows, strict=True)
        )

    assert correct("tiny-teacher") >= 0.9 * len(rows)
    assert correct("tiny-student") <= 0.1 * len(rows)
