"""``map``, ``explode`` and ``union`` in the checker: their output columns typed from their
expressions and inputs, and their mistakes at their positions."""

from __future__ import annotations

from pathlib import Path

from kdlang.check import load_checked
from tests.check.support import diagnose, found, only, write

CHATS = """\
dataset chats = inline([
  {id: 1, conversation: [{role: "user", content: "Hi"}, {role: "assistant", content: "Hello"}]},
  {id: 2, conversation: [{role: "user", content: "2+2?"}, {role: "assistant", content: "<answer>4</answer>"}]},
])
dataset notes = inline([{title: "a", body: "x\\ny", score: 1.5, raw: "[1, 2]"}])
"""
"""Two datasets on lines 1 to 5: conversations (typed ``messages``) and notes."""


def schemas(project: Path, text: str) -> dict:
    write(project, {"recipe.kd": text})
    program, warnings = load_checked(str(project / "recipe.kd"))
    assert warnings == []
    return program.schemas


def test_map_columns_are_typed_from_their_expressions(project: Path):
    text = CHATS + (
        "stage m = map(chats) {\n"  # line 6
        "  last_turn = last(conversation)\n"
        '  answer = extract(last_turn.content, r"<answer>(.*?)</answer>")\n'
        "  turns = len(conversation)\n"
        "  first_role = conversation[0].role\n"
        '  words = split(answer, " ")\n'
        "  long = turns > 1\n"
        "  ratio = turns / 2\n"
        "  parsed = json(answer)\n"
        "  drop = [conversation]\n"
        "}\n"
    )
    assert schemas(project, text)["m"] == {
        "id": "int",
        "last_turn": "turn",
        "answer": "str",
        "turns": "int",
        "first_role": "str",
        "words": "list",  # a column of lists of strings is a list column
        "long": "bool",
        "ratio": "float",
        "parsed": "any",
    }


def test_map_keep_narrows_and_a_computed_column_replaces_in_place(project: Path):
    text = CHATS + (
        "stage m = map(notes) {\n  keep = [score, title]\n  title = upper(title)\n  n = 1\n}\n"
    )
    out = schemas(project, text)["m"]
    assert list(out.items()) == [("title", "str"), ("score", "float"), ("n", "int")]


def test_stages_after_a_map_see_its_columns(project: Path):
    text = CHATS + (
        'stage m = map(notes) { lines = split(body, "\\n") }\n'
        "stage f = filter(m) { keep len(lines) > 1 and lines[0] == title }\n"
        "stage s = select(m) { n = 1  by = score }\n"
    )
    assert schemas(project, text)["f"]["lines"] == "list"


def test_explode_types_the_items(project: Path):
    text = CHATS + (
        'stage lines = explode(notes) { line = split(body, "\\n") }\n'
        "stage turns = explode(chats) { turn = conversation }\n"
        "stage roles = map(turns) { role = turn.role }\n"
        "stage numbers = explode(notes) { n = json(raw) }\n"
    )
    found_schemas = schemas(project, text)
    assert found_schemas["lines"] == {
        "title": "str",
        "body": "str",
        "score": "float",
        "raw": "str",
        "line": "str",
    }
    assert found_schemas["turns"]["turn"] == "turn"
    assert found_schemas["roles"]["role"] == "str"
    assert found_schemas["numbers"]["n"] == "any"


def test_union_keeps_the_columns_and_adds_the_source(project: Path):
    text = CHATS + (
        "stage a = map(notes) { keep = [title, score] }\n"
        "stage b = map(notes) { keep = [title]  score = 2.0 }\n"
        "stage u = union(a, b, a)\n"
        'stage v = union(a, b) { source = "origin" }\n'
    )
    found_schemas = schemas(project, text)
    assert found_schemas["u"] == {"title": "str", "score": "float", "source": "str"}
    assert found_schemas["v"] == {"title": "str", "score": "float", "origin": "str"}


def test_a_type_error_in_a_map_column_is_at_its_position(project: Path):
    text = CHATS + "stage m = map(notes) {\n  size = len(score)\n}\n"
    d = only(diagnose(project, text), "KD0208")
    assert (d.span.line, d.span.column, d.span.end_column) == (7, 14, 19)
    assert d.message == "argument `x` of `len` must be a list or a string, not a number"


def test_a_missing_field_and_a_missing_column_in_a_map(project: Path):
    text = CHATS + (
        "stage m = map(chats) {\n  text = last(conversation).text\n  other = titel\n}\n"
    )
    diagnostics = diagnose(project, text)
    assert found(diagnostics) == [("KD0230", 7, 10), ("KD0205", 8, 11)]
    assert diagnostics[0].message == "a turn has no field `text`"
    assert diagnostics[0].help == "a turn's fields: role, content"


def test_later_map_lines_see_earlier_ones_but_not_the_reverse(project: Path):
    text = CHATS + "stage m = map(notes) {\n  a = b + 1\n  b = 1\n  c = b * 2\n}\n"
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (7, 7)
    assert d.message == "unknown column `b`"


def test_keep_and_drop_name_columns_of_the_input(project: Path):
    text = CHATS + "stage m = map(notes) {\n  drop = [titel]\n}\n"
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (7, 10)
    assert d.message == "`drop` names column `titel`, which the data does not have"


def test_explode_of_a_value_that_is_no_list(project: Path):
    text = CHATS + "stage e = explode(notes) {\n  word = upper(title)\n}\n"
    d = only(diagnose(project, text), "KD0231")
    assert (d.span.line, d.span.column, d.span.end_column) == (7, 10, 22)
    assert d.message == "`explode` needs a list to take apart, this is a string"


def test_union_of_inputs_with_other_columns(project: Path):
    text = CHATS + "stage u = union(notes, chats)\n"
    d = only(diagnose(project, text), "KD0232")
    assert (d.span.line, d.span.column) == (6, 24)
    assert d.message == (
        "`chats` does not have the columns of `notes`: it lacks `title`, `body`, `score`, "
        "`raw` and has `id`, `conversation` besides"
    )


def test_union_of_columns_of_different_types(project: Path):
    text = CHATS + (
        "stage a = map(notes) { keep = [title]  n = 1 }\n"
        'stage b = map(notes) { keep = [title]  n = "one" }\n'
        "stage u = union(a, b)\n"
    )
    d = only(diagnose(project, text), "KD0233")
    assert (d.span.line, d.span.column) == (8, 20)
    assert d.message == "column `n` holds int in `a` but str in `b`"


def test_union_source_column_that_exists(project: Path):
    text = CHATS + (
        'stage a = map(notes) { keep = [title]  source = "x" }\n'
        "stage u = union(a, a)\n"
        'stage v = union(a, a) { source = "from" }\n'
    )
    d = only(diagnose(project, text), "KD0234")
    assert (d.span.line, d.span.column) == (7, 17)  # at the input that has it


def test_union_inputs_must_be_data(project: Path):
    text = CHATS + 'prompt p = "x"\nstage u = union(notes, p)\n'
    d = only(diagnose(project, text), "KD0204")
    assert (d.span.line, d.span.column) == (7, 24)


def test_lowering_mistakes_of_the_operators(project: Path):
    text = CHATS + (
        "stage m = map(notes) {\n  a = 1\n  a = 2\n}\n"  # lines 6-9
        "stage e = explode(notes) {\n  # nothing\n}\n"  # lines 10-12
        'stage u = union(notes) { source = "s" }\n'  # line 13
    )
    diagnostics = diagnose(project, text)
    assert found(diagnostics) == [("KD0106", 8, 3), ("KD0121", 10, 7), ("KD0122", 13, 11)]
    assert diagnostics[0].message == "column `a` is computed twice"
    assert diagnostics[1].message == "explode `e` takes one `COLUMN = EXPR` line, it has none"
