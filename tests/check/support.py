"""Helpers shared by the checker and planner tests: a tiny project on disk (data files in three
formats, model folders holding only tokenizer and config files) and running the checker on it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from kdlang.check import check_files
from kdlang.syntax.diagnostics import Diagnostic

TRAIN_ROWS = [
    {"question": "What is 2 + 3?", "answer": "5", "level": 1},
    {"question": "What is 7 - 4?", "answer": "3", "level": 1},
    {"question": "What is 6 * 7?", "answer": "42", "level": 2},
]
TEST_ROWS = [{"question": "What is 9 + 1?", "answer": "10", "level": 1}]
STUDENT_VOCAB = 151936


def write(root: Path, files: dict[str, str | bytes]) -> None:
    """Create ``files`` (relative path -> text or bytes) under ``root``; text is dedented."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def model_folder(path: Path, tokens: list[str], vocab_size: int) -> Path:
    """A "model" with no weights: a BPE tokenizer.json over ``tokens`` and a config.json."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = {
        "version": "1.0",
        "added_tokens": [{"id": len(tokens), "content": "<|endoftext|>", "special": True}],
        "model": {"type": "BPE", "vocab": {t: i for i, t in enumerate(tokens)}, "merges": []},
    }
    (path / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    config = {"model_type": "qwen2", "vocab_size": vocab_size, "hidden_size": 64}
    (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


def make_project(root: Path) -> Path:
    """Data in jsonl, csv and parquet, and three model folders: ``teacher`` and ``student``
    share one vocabulary table, ``other`` has a different one."""
    write(
        root,
        {
            "data/train.jsonl": jsonl(TRAIN_ROWS),
            "data/test.jsonl": jsonl(TEST_ROWS),
            "data/topics.csv": "topic,style\nalgebra,short\ngeometry,long\n",
        },
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["a", "b"], "score": [1.5, 2.0], "votes": [3, 4]})
    pq.write_table(table, root / "data" / "scored.parquet")
    shared = ["a", "b", "c", "ab", "bc", "Ġ", "1", "2"]
    model_folder(root / "models" / "teacher", shared, STUDENT_VOCAB)
    model_folder(root / "models" / "student", shared, STUDENT_VOCAB)
    model_folder(root / "models" / "other", ["x", "y", "z", "xy", "1", "2", "3", "4"], 32000)
    return root


HEADER = """\
model teacher = hf("models/teacher")
model student = hf("models/student")
dataset problems = jsonl("data/train.jsonl")
dataset heldout = jsonl("data/test.jsonl")
"""
"""Four lines every recipe of the tests can start with (declarations on lines 1 to 4)."""


def diagnose(
    root: Path, text: str, overrides: list[str] = (), name: str = "recipe.kd"
) -> list[Diagnostic]:
    """Write ``text`` (dedented) to ``root/name`` and check it as ``kdlang check`` does."""
    write(root, {name: text})
    diagnostics, _ = check_files([str(root / name)], list(overrides))
    return diagnostics


def found(diagnostics: list[Diagnostic]) -> list[tuple[str, int, int]]:
    """(code, line, column) of every diagnostic, in report order."""
    return [(d.code, d.span.line, d.span.column) for d in diagnostics]


def only(diagnostics: list[Diagnostic], code: str) -> Diagnostic:
    """The one diagnostic of the run, which must have ``code``."""
    assert len(diagnostics) == 1, [f"{d.span}: {d.code} {d.message}" for d in diagnostics]
    assert diagnostics[0].code == code, f"{diagnostics[0].code}: {diagnostics[0].message}"
    return diagnostics[0]
