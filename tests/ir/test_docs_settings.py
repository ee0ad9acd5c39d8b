"""Every setting the hand-written docs name exists in the IR, and every IR setting of a backend
is in its docs table: a documented setting that the checker refuses (or an accepted one nobody
can find) cannot come back. ``docs/language.md``'s tables are generated from the IR (see
``test_reference.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdlang.ir.sources import MODEL_POSITIONAL, HFModel, OpenAIModel
from kdlang.ir.values import Node

DOCS = Path(__file__).resolve().parents[2] / "docs"
INTERNAL = {"span", "spans", "kind", "op", "rule", "name"}


def settings(model: type[Node]) -> set[str]:
    return set(model.model_fields) - INTERNAL


def section_table(text: str, heading: str) -> list[str]:
    """First-column names of the first ``| setting |`` table after ``heading``."""
    start = text.index(heading + "\n")
    lines = text[start:].splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("| setting"))
    names = []
    for line in lines[head + 2 :]:
        if not line.startswith("|"):
            break
        names += re.findall(r"`([a-z_]+)`", line.split("|")[1])
    return names


@pytest.mark.parametrize(("heading", "model"), [("## `hf`", HFModel), ("## `openai`", OpenAIModel)])
def test_the_teacher_tables_name_exactly_the_ir_settings(heading: str, model: type[Node]):
    documented = section_table((DOCS / "teachers.md").read_text(encoding="utf-8"), heading)
    assert len(documented) == len(set(documented)), "a setting is listed twice"
    assert set(documented) == settings(model)


def test_settings_written_in_the_teacher_examples_exist():
    text = (DOCS / "teachers.md").read_text(encoding="utf-8")
    kinds = {"hf": HFModel, "openai": OpenAIModel}
    seen = 0
    for kind, args in re.findall(r"= (hf|openai)\(\"[^\"]*\",?(.*?)\)\n", text, re.DOTALL):
        for key in re.findall(r"([a-z_]+) =", args):
            assert key in settings(kinds[kind]) - set(MODEL_POSITIONAL[kind]), (kind, key)
            seen += 1
    assert seen >= 5  # the examples are found at all


SETTING_CODES = {"KD0101", "KD0102", "KD0103", "KD0104", "KD0107", "KD0108", "KD0112"}
WRAPPERS = {"loss": "train t {{\n{}\n}}", "keep": "stage s = filter(d) {{\n{}\n}}"}


def kd_blocks() -> list[tuple[str, str]]:
    found = []
    for path in [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]:
        text = path.read_text(encoding="utf-8")
        found += [(path.name, m) for m in re.findall(r"```kd\n(.*?)```", text, re.DOTALL)]
    return found


def test_every_kd_example_in_the_docs_uses_settings_the_language_has():
    from kdlang.lower import lower
    from kdlang.syntax.diagnostics import Collector
    from kdlang.syntax.parser import parse

    blocks = kd_blocks()
    assert len(blocks) >= 20
    for name, source in blocks:
        first = source.split(None, 1)[0] if source.strip() else ""
        if first in WRAPPERS:  # a fragment of a block
            source = WRAPPERS[first].format(source)
        errors = Collector()
        lower(parse(source, name), errors)
        wrong = [(d.code, d.message) for d in errors.diagnostics if d.code in SETTING_CODES]
        assert wrong == [], (name, source[:80])
