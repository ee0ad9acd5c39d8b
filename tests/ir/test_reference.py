"""The generated settings reference, and the language documentation that embeds it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kdlang.ir import reference
from kdlang.ir.losses import LOSSES, DivergenceLoss, HiddenLoss, JSDLoss
from kdlang.ir.selection import PairsStage
from kdlang.ir.sources import DATASET_KINDS, MODEL_KINDS, HFModel, OpenAIModel
from kdlang.ir.stages import STAGE_OPERATORS, LabelStage
from kdlang.ir.training import Evaluate, Train
from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.parser import parse

ROOT = Path(__file__).resolve().parents[2]
LANGUAGE = ROOT / "docs" / "language.md"


@pytest.fixture(scope="module")
def text() -> str:
    return reference.markdown()


def _table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under ``#### heading``: setting -> [type, default, description]."""
    section = text.split(f"#### {heading}\n", 1)[1].split("\n#### ", 1)[0].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells[1:]
    return rows


def test_the_document_embeds_the_current_reference(text):
    assert reference.embedded(LANGUAGE.read_text(encoding="utf-8")) == text, (
        "refresh it: python -m kdlang.ir.reference --update docs/language.md"
    )


def test_embed_replaces_only_the_marked_part(text):
    document = "intro\n<!-- reference:start -->\nold\n<!-- reference:end -->\noutro\n"
    updated = reference.embed(document)
    assert updated.startswith("intro\n<!-- reference:start -->\n## Settings reference\n")
    assert updated.endswith(text + "<!-- reference:end -->\noutro\n")
    assert reference.embedded(updated) == text
    with pytest.raises(ValueError):
        reference.embedded("no markers here")


def test_the_command_prints_the_reference(text):
    result = subprocess.run(
        [sys.executable, "-m", "kdlang.ir.reference"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout == text


def test_every_kind_operator_and_loss_has_a_section(text):
    headings = re.findall(r"^#### (.+)$", text, flags=re.MULTILINE)
    joined = "\n".join(headings)
    for kind in MODEL_KINDS:
        assert f"`{kind}(" in joined
    for kind in DATASET_KINDS:
        assert f"`{kind}(" in joined
    for op in STAGE_OPERATORS:
        assert f"`{op}(input)`" in headings
    for loss in LOSSES:
        assert re.search(rf"`loss [a-z_|]*\b{loss}\b", joined), loss
    assert "`evaluate(model, data)`" in headings
    assert "`lora(...)`" in headings


@pytest.mark.parametrize(
    ("heading", "model", "left_out"),
    [
        ('`hf("path", ...)`', HFModel, set()),
        ('`openai("model", ...)`', OpenAIModel, set()),
        ("`label(input)`", LabelStage, set()),
        ("`pairs(input)`", PairsStage, set()),
        ("`train NAME { ... }`", Train, {"losses"}),
        ("`evaluate(model, data)`", Evaluate, {"metrics"}),
    ],
)
def test_every_setting_is_listed(text, heading, model, left_out):
    rows = _table(text, heading)
    listed = {re.match(r"`(\w+)`", name).group(1) for name in rows}
    internal = {"span", "spans", "kind", "op"}
    assert listed == set(model.model_fields) - internal - left_out


def test_row_contents(text):
    train = _table(text, "`train NAME { ... }`")
    assert train["`epochs`"] == [
        "integer >= 1",
        "`1`",
        "Passes over the data (ignored when max_steps is set).",
    ]
    assert train["`student`"][:2] == ["name", "*required*"]
    assert train["`target`"][:2] == ["column name", '`"output"`']
    assert train["`lr_schedule`"][:2] == [
        "`constant`, `linear(...)` or `cosine(...)`",
        "`constant`",
    ]
    assert train["`betas`"][:2] == ["list of 2 numbers", "`[0.9, 0.999]`"]
    assert train["`on_policy`"][:2] == ["number in [0, 1] or schedule", "`0`"]
    assert train["`loss_path`"][:2] == [
        "one of `auto`, `materialized`, `fused_linear`",
        "`auto`",
    ]
    hf = _table(text, '`hf("path", ...)`')
    assert next(iter(hf)) == "`path` (positional)"
    assert hf["`lora`"][:2] == ["`lora(...)`", "`null`"]
    openai = _table(text, '`openai("model", ...)`')
    assert openai["`api_key`"][0] == '`env("NAME")`'
    assert openai["`base_url`"][0] == (
        'string or `env("NAME")` or list of (string or `env("NAME")`), at least 1'
    )
    evaluate = _table(text, "`evaluate(model, data)`")
    assert list(evaluate)[:2] == ["`model` (positional 1)", "`data` (positional 2)"]
    decontaminate = _table(text, "`decontaminate COLUMN against DATASET [by ngram(n = N)]`")
    assert list(decontaminate) == ["`n`"]


@pytest.mark.parametrize(
    ("model", "field", "expected"),
    [
        (DivergenceLoss, "temperature", "number > 0 or schedule"),
        (JSDLoss, "beta", "number in [0, 1] or schedule"),
        (DivergenceLoss, "weight", "number >= 0 or schedule"),
        (HiddenLoss, "layers", "list of lists of 2 integers, at least 1"),
        (LabelStage, "top_p", "number in (0, 1]"),
        (LabelStage, "system", "string or name"),
        (LabelStage, "stop", "list of strings"),
        (Train, "max_steps", "integer >= 1"),
        (Train, "clip", "number > 0"),
        (HFModel, "dtype", "one of `auto`, `float32`, `bfloat16`, `float16`"),
    ],
)
def test_type_names(model, field, expected):
    assert reference.type_name(model.model_fields[field]) == expected


def test_default_texts():
    fields = Train.model_fields
    assert reference.default_text(fields["data"]) == "*required*"
    assert reference.default_text(fields["teacher"]) == "`null`"
    assert reference.default_text(fields["compile"]) == "`auto`"
    assert reference.default_text(fields["gradient_checkpointing"]) == "`false`"
    assert reference.default_text(fields["lr"]) == "`0.0001`"
    assert reference.default_text(HFModel.model_fields["dtype"]) == "`auto`"


def _kd_blocks(document: str) -> list[str]:
    return re.findall(r"```kd\n(.*?)```", document, flags=re.DOTALL)


def test_every_example_in_the_language_document_parses():
    blocks = _kd_blocks(LANGUAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    for block in blocks:
        try:
            parse(block)
        except Exception:
            parse("train t {\n" + block + "\n}")  # a fragment of a block


def test_the_opening_example_lowers_cleanly():
    example = _kd_blocks(LANGUAGE.read_text(encoding="utf-8"))[0]
    errors = Collector()
    recipe = lower(parse(example, "example.kd"), errors)
    assert errors.diagnostics == []
    assert list(recipe.stages) == ["rationales", "clean"]
    assert [loss.name for loss in recipe.trains["distill"].losses] == ["sft", "forward_kl"]


def test_the_document_has_the_chapters_a_newcomer_needs():
    headings = re.findall(r"^##+ (.+)$", LANGUAGE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    for wanted in (
        "Lexical structure",
        "Declarations",
        "Blocks and statements",
        "Expressions",
        "Schedules",
        'Secrets: `env("NAME")`',
        "Overrides: `--set PATH=VALUE`",
        "Type system and checks",
        "Settings reference",
    ):
        assert wanted in headings, wanted
