"""Data files (KD0402 missing, KD0403 unreadable) and ``--set`` overrides (KD0401 unknown path,
KD0404 invalid value), with their positions in the recipe or in the override's own text."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlang.check import load_checked
from kdlang.ir.values import Schedule
from tests.check.support import HEADER, diagnose, found, only, write

RECIPE = HEADER + (
    'recipe "arith" { seed = 3 }\n'  # line 5
    'prompt solve = "Q: {{ question }}"\n'
    "stage answers = label(problems) { teacher = teacher  prompt = solve  output = rationale }\n"
    "train distill {\n"  # line 8
    "  student = student  teacher = teacher  data = answers  prompt = solve  target = rationale\n"
    "  lr = 3e-4\n"
    "  loss sft weight 0.5\n"
    "  loss forward_kl weight 1.0 temperature 2.0\n"
    "}\n"
)


def test_missing_data_file(project: Path):
    d = only(diagnose(project, 'dataset rows = jsonl("data/none.jsonl")\n'), "KD0402")
    assert (d.span.line, d.span.column, d.span.end_column) == (1, 22, 39)
    assert d.message == "data file not found: data/none.jsonl"


def test_data_paths_are_relative_to_the_declaring_file(project: Path):
    write(project, {"sub/data.kd": 'dataset rows = jsonl("../data/train.jsonl")\n'})
    assert diagnose(project, 'import "sub/data.kd"\n') == []
    write(project, {"sub/data.kd": 'dataset rows = jsonl("data/train.jsonl")\n'})
    d = only(diagnose(project, 'import "sub/data.kd"\n'), "KD0402")
    assert (d.span.file, d.span.line, d.span.column) == (str(project / "sub/data.kd"), 1, 22)


@pytest.mark.parametrize(
    ("kind", "content", "reason"),
    [
        ("jsonl", '{"a": 1}\nnot json\n', "line 2, column 1 is not JSON"),
        ("jsonl", '{"a": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
        ("jsonl", "\n\n", "the file has no rows"),
        ("jsonl", b'{"a": "\xff"}\n', "not UTF-8 text"),
        ("csv", "", "the file has no header row"),
        ("csv", b"a,b\xfe\n", "not UTF-8 text"),
        ("parquet", "not parquet at all", "agic"),  # pyarrow's own words: "magic bytes"
    ],
)
def test_unreadable_data_file(project: Path, kind: str, content, reason: str):
    write(project, {f"data/bad.{kind}": content})
    d = only(diagnose(project, f'# rows\ndataset rows = {kind}("data/bad.{kind}")\n'), "KD0403")
    assert (d.span.line, d.span.column) == (2, 17 + len(kind))
    assert d.message.startswith(f"cannot read the columns of data/bad.{kind}: ")
    assert reason in d.message


def test_declared_columns_make_an_unreadable_file_acceptable(project: Path):
    write(project, {"data/bad.jsonl": "not json\n"})
    assert diagnose(project, 'dataset rows = jsonl("data/bad.jsonl") { columns = [a] }\n') == []


def test_overrides_change_the_recipe(project: Path):
    write(project, {"recipe.kd": RECIPE})
    program, _ = load_checked(
        str(project / "recipe.kd"),
        [
            "recipe.seed=11",
            "distill.lr=1e-5",
            "answers.samples=4",
            "distill.loss.forward_kl.weight=linear(0.0 -> 1.0, over = 30%)",
            "distill.loss.forward_kl.temperature_scale=true",
            "teacher.dtype=bfloat16",
            "distill.epochs=2",
        ],
    )
    recipe = program.recipe
    assert recipe.seed == 11
    distill = recipe.trains["distill"]
    assert (distill.lr, distill.epochs) == (1e-5, 2)
    assert recipe.stages["answers"].samples == 4
    forward = distill.losses[1]
    assert forward.weight == Schedule(kind="linear", start=0.0, end=1.0, over={"fraction": 0.3})
    assert (forward.temperature_scale, forward.temperature) == (True, 2.0)
    assert recipe.models["teacher"].dtype == "bfloat16"


def test_overrides_reach_declarations_of_imported_files(project: Path):
    # The models and data of the recipe live in a file it imports (and one that file imports).
    write(
        project,
        {
            "shared/models.kd": HEADER.replace('"models/', '"../models/').replace(
                '"data/', '"../data/'
            )
        },
    )
    write(project, {"shared/all.kd": 'import "models.kd"\n'})
    root = 'import "shared/all.kd"\n' + RECIPE.removeprefix(HEADER)
    write(project, {"recipe.kd": root})
    program, _ = load_checked(
        str(project / "recipe.kd"),
        ["teacher.dtype=bfloat16", "problems.limit=2", "distill.lr=1e-5", "recipe.seed=5"],
    )
    recipe = program.recipe
    assert recipe.models["teacher"].dtype == "bfloat16"
    assert recipe.datasets["problems"].limit == 2
    assert (recipe.trains["distill"].lr, recipe.seed) == (1e-5, 5)
    # A name declared nowhere is reported once, with the names of every file to choose from.
    d = only(diagnose(project, root, ["teachr.dtype=float32"]), "KD0401")
    assert d.message == (
        f"override path `teachr.dtype`: no declaration `teachr` in {project / 'recipe.kd'} "
        "or the files it imports"
    )
    assert d.help == 'did you mean "teacher"?'


@pytest.mark.parametrize(
    ("override", "message", "help"),
    [
        (
            "distill.lrr=1",
            "override path `distill.lrr`: no setting `lrr` here",
            'did you mean "lr"?',
        ),
        (
            "distil.lr=1",
            "override path `distil.lr`: no declaration `distil` in",
            'did you mean "distill"?',
        ),
        (
            "seed=1",
            "override path `seed` names no setting",
            "paths look like distill.lr or recipe.seed",
        ),
        (
            "recipe.sed=1",
            "override path `recipe.sed`: no setting `sed` here",
            'did you mean "seed"?',
        ),
        (
            "distill.loss.kl.weight=1",
            "override path `distill.loss.kl.weight`: expected distill.loss.LOSS.SETTING with LOSS one of sft, forward_kl",
            None,
        ),
        (
            "distill.loss.forward_kl.tempreature=1",
            "override path `distill.loss.forward_kl.tempreature`: loss `forward_kl` has no setting `tempreature`",
            'did you mean "temperature"?',
        ),
        (
            # each divergence takes its own options only: beta is jsd's
            "distill.loss.forward_kl.beta=0.25",
            "override path `distill.loss.forward_kl.beta`: loss `forward_kl` has no setting `beta`",
            "settings: weight, temperature, temperature_scale, topk_mass, reduction, infinite_logits",
        ),
        ("solve.text=1", "override path `solve.text`: `solve` has no settings to override", None),
    ],
)
def test_unknown_override_path(project: Path, override: str, message: str, help):
    d = only(diagnose(project, RECIPE, [override]), "KD0401")
    path = override.split("=")[0]
    assert (d.span.file, d.span.line, d.span.column, d.span.end_column) == (
        f"--set {path}",
        1,
        1,
        len(path) + 1,
    )
    assert d.message.startswith(message)
    assert d.help == help


def test_a_declaration_without_overridable_settings_gives_no_empty_help(project: Path):
    text = HEADER + "stage clean = filter(problems) { keep len(answer) > 0 }\n"
    d = only(diagnose(project, text, ["clean.temperature=1"]), "KD0401")
    assert d.help is None


@pytest.mark.parametrize(
    ("override", "column", "message"),
    [
        ("distill.lr=1e-4 *", 18, "missing value"),
        ("distill.lr=@", 12, "unexpected character `@`"),
        ('distill.lr="unclosed', 12, "unclosed string"),
        ("distill.lr", 1, "an override is PATH=VALUE, got `distill.lr`"),
    ],
)
def test_invalid_override_value(project: Path, override: str, column: int, message: str):
    diagnostics = diagnose(project, RECIPE, [override])
    assert {d.code for d in diagnostics} == {"KD0404"}
    d = diagnostics[0]
    assert (d.span.file, d.span.line, d.span.column) == ("--set distill.lr", 1, column)
    assert message in d.message


def test_an_override_is_validated_like_the_recipe(project: Path):
    # the value parses, but a learning rate is a positive number: the error is in the --set text
    d = only(diagnose(project, RECIPE, ["distill.lr=-1"]), "KD0104")
    assert (d.span.file, d.span.line, d.span.column) == ("--set distill.lr", 1, 12)
    d = only(diagnose(project, RECIPE, ['distill.epochs="two"']), "KD0103")
    assert (d.span.file, d.span.column) == ("--set distill.epochs", 16)


def test_one_path_given_twice_keeps_each_text(project: Path):
    from kdlang.check import check_files

    write(project, {"recipe.kd": RECIPE})
    diagnostics, sources = check_files(
        [str(project / "recipe.kd")], ["distill.lr=@", "distill.lr=$"]
    )
    assert found(diagnostics) == [("KD0404", 1, 12), ("KD0404", 1, 12)]
    files = [d.span.file for d in diagnostics]
    assert files == ["--set distill.lr", "--set distill.lr (#2)"]
    assert [sources[f] for f in files] == ["distill.lr=@", "distill.lr=$"]
