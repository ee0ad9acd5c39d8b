"""The table of diagnostic codes, its generated documentation, and the codes the compiler uses."""

from __future__ import annotations

import re
from pathlib import Path

from kdlang.ir.vocabulary import words
from kdlang.syntax import codes

ROOT = Path(__file__).resolve().parents[2]


def test_docs_diagnostics_is_generated_from_the_table():
    text = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    assert text == codes.markdown(words()), (
        "regenerate: python -m kdlang.ir.vocabulary > docs/diagnostics.md"
    )


def test_the_lists_in_explanations_come_from_the_registries():
    from kdlang.ir.losses import LOSSES
    from kdlang.ir.stages import STAGE_OPERATORS

    text = codes.markdown(words())
    assert not re.search(r"\{[a-z_]+\}", text)  # every placeholder filled
    assert all(f"`{op}`" in codes.explain("KD0101", words()) for op in STAGE_OPERATORS)
    assert all(f"`{name}`" in codes.explain("KD0108", words()) for name in LOSSES)


def test_codes_are_well_formed_and_grouped_by_range():
    assert list(codes.CODES) == sorted(codes.CODES)
    for code, entry in codes.CODES.items():
        assert re.fullmatch(r"KD0[0-4]\d\d", code)
        assert entry.code == code
        assert entry.title and entry.title == entry.title.strip()
        assert entry.explanation.endswith(".")


def test_every_code_the_compiler_emits_is_explained():
    used = set()
    for path in (ROOT / "kdlang").rglob("*.py"):
        used |= set(re.findall(r"\"(KD\d{4})\"", path.read_text(encoding="utf-8")))
    assert used, "no code found: the scan is broken"
    assert used - set(codes.CODES) == set()


def test_explain_text():
    assert codes.explain("KD0102", words()) == (
        "KD0102: unknown setting\n\n" + codes.CODES["KD0102"].explanation + "\n"
    )
    assert codes.explain("kd0007", words()).startswith("KD0007: unknown escape sequence")
    assert codes.explain("KD9999", words()) is None


def test_markdown_has_one_section_per_code():
    headings = re.findall(r"^## (KD\d{4}): (.+)$", codes.markdown(words()), flags=re.MULTILINE)
    assert headings == [(entry.code, entry.title) for entry in codes.CODES.values()]
