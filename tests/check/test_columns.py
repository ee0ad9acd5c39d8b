"""Column schemas through the DAG (read from jsonl, csv and parquet files, added by stages) and
unknown columns (KD0205) wherever a column is named."""

from __future__ import annotations

from pathlib import Path

from kdlang.check import load_checked
from tests.check.support import HEADER, diagnose, found, jsonl, only, write


def schemas(project: Path, text: str) -> dict:
    write(project, {"recipe.kd": text})
    program, warnings = load_checked(str(project / "recipe.kd"))
    assert warnings == []
    return program.schemas


def test_columns_are_read_from_jsonl_csv_and_parquet(project: Path):
    text = HEADER + (
        'dataset topics = csv("data/topics.csv")\n'
        'dataset scored = parquet("data/scored.parquet")\n'
        'dataset typed = inline([{n: 1, x: 0.5, ok: true, tags: ["a"]}, {n: 2, x: 1, ok: false, tags: []}])\n'
    )
    found_schemas = schemas(project, text)
    assert found_schemas["problems"] == {"question": "str", "answer": "str", "level": "int"}
    assert found_schemas["topics"] == {"topic": "str", "style": "str"}
    assert found_schemas["scored"] == {"prompt": "str", "score": "float", "votes": "int"}
    # an int and a float in one column make it a float column
    assert found_schemas["typed"] == {"n": "int", "x": "float", "ok": "bool", "tags": "list"}


def test_nulls_do_not_decide_a_column_type(project: Path):
    rows = [{"a": None, "b": 1, "c": None}, {"a": "x", "b": None, "c": None}, {"a": "y", "b": 2.0}]
    write(project, {"data/holes.jsonl": jsonl(rows)})
    text = 'dataset holes = jsonl("data/holes.jsonl")\n'
    assert schemas(project, text)["holes"] == {"a": "str", "b": "float", "c": "any"}
    # so a mistake about the column's non-null values is still found
    text += "stage bad = filter(holes) { keep a > 1 }\n"
    d = only(diagnose(project, text), "KD0208")
    assert (d.span.line, d.span.column) == (2, 34)


def test_each_stage_adds_the_columns_it_declares(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        'prompt rubric = "Rate: {{ rationale }}"\n'
        "stage rationales = label(problems) {\n"
        "  teacher = teacher  prompt = solve  samples = 2  output = rationale\n"
        "}\n"
        "stage judged = judge(rationales) { judge = teacher  prompt = rubric }\n"
        "stage prefs = pairs(judged) { group = question  response = rationale }\n"
        "stage clean = filter(rationales) { keep len(rationale) > 0 }\n"
        "stage soft = teacher_logits(clean) { teacher = teacher  prompt = solve  target = rationale }\n"
    )
    s = schemas(project, text)
    base = {"question": "str", "answer": "str", "level": "int"}
    assert s["rationales"] == {**base, "rationale": "str", "sample": "int"}
    assert s["judged"] == {**base, "rationale": "str", "sample": "int", "score": "float"}
    assert s["prefs"] == {"question": "str", "chosen": "str", "rejected": "str", "margin": "float"}
    assert s["clean"] == s["rationales"]
    assert s["soft"] == {
        **s["rationales"],
        "topk_ids": "list",
        "topk_logprobs": "list",
        "topk_target_ids": "list",
    }


def test_unknown_column_in_a_keep_condition(project: Path):
    text = HEADER + "stage clean = filter(problems) {\n  keep len(answr) > 0\n}\n"
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column, d.span.end_column) == (6, 12, 17)
    assert d.message == "unknown column `answr`"
    assert d.help == 'did you mean "answer"?'


def test_a_column_is_unknown_before_the_stage_that_adds_it(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "stage early = filter(problems) { keep len(rationale) in 8..400 }\n"
        "stage rationales = label(problems) { teacher = teacher  prompt = solve  output = rationale }\n"
        "stage late = filter(rationales) { keep len(rationale) in 8..400 }\n"
    )
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (6, 43)


def test_unknown_column_in_a_column_setting(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "train distill {\n"
        "  student = student  data = problems  prompt = solve\n"
        "  target = answers\n"
        "  loss sft weight 1.0\n"
        "}\n"
    )
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (8, 12)
    assert d.message == "`target` names column `answers`, which the data does not have"
    assert d.help == 'did you mean "answer"?'


def test_declared_columns_must_be_in_the_file(project: Path):
    text = 'dataset topics = csv("data/topics.csv") {\n  columns = [topic, styel]\n}\n'
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (2, 13)
    assert d.message == "declared column `styel` is not in data/topics.csv"
    assert d.help == 'did you mean "style"?'


def test_declared_columns_narrow_the_schema(project: Path):
    text = 'dataset topics = csv("data/topics.csv") { columns = [topic] }\n'
    assert schemas(project, text)["topics"] == {"topic": "str"}


def test_dedup_and_decontaminate_columns(project: Path):
    text = HEADER + (
        'dataset topics = csv("data/topics.csv")\n'
        "stage clean = filter(problems) {\n"
        "  dedup questoin by exact\n"
        "  decontaminate question against topics\n"
        "}\n"
    )
    assert found(diagnose(project, text)) == [("KD0205", 7, 9), ("KD0205", 8, 34)]


def test_unknown_column_in_a_metric_and_the_output_column(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "train distill {\n"
        "  student = student  data = problems  prompt = solve  target = answer\n"
        "  loss sft weight 1.0\n"
        "}\n"
        "eval accuracy = evaluate(distill, heldout) {\n"
        "  prompt = solve\n"
        "  metric exact_match(output, answer)\n"
        "  metric wrong = exact_match(output, anser)\n"
        "}\n"
    )
    d = only(diagnose(project, text), "KD0205")
    assert (d.span.line, d.span.column) == (13, 38)


def test_pairs_stage_settings_name_columns(project: Path):
    text = HEADER + "stage prefs = pairs(problems) { group = question  response = answer }\n"
    d = only(diagnose(project, text), "KD0205")
    # `score` is the default; the data has none, and the diagnostic points at the stage
    assert d.message == "`score` names column `score`, which the data does not have"
    assert (d.span.line, d.span.column) == (5, 1)


# -- KD0211 a list or map where text is required ------------------------------------------------

STRUCTURED_ROWS = [
    {"q": "Hi?", "turns": [{"role": "user", "content": "Hi?"}], "meta": {"src": "x"}, "a": "Hi."},
    {"q": "Yo?", "turns": [{"role": "user", "content": "Yo?"}], "meta": {"src": "y"}, "a": "Yo."},
]
for _row in STRUCTURED_ROWS:
    _row["tags"] = [_row["q"]]  # a list that is no conversation


def structured(project: Path, body: str) -> list:
    import pyarrow as pa
    import pyarrow.parquet as pq

    write(project, {"data/chat.jsonl": jsonl(STRUCTURED_ROWS)})
    pq.write_table(pa.Table.from_pylist(STRUCTURED_ROWS), project / "data" / "chat.parquet")
    head = HEADER + 'dataset chat = jsonl("data/chat.jsonl")\n'
    head += 'dataset pchat = parquet("data/chat.parquet")\n'
    return diagnose(project, head + body)


def test_list_and_map_columns_are_typed_from_jsonl_parquet_and_inline(project: Path):
    structured(project, "")
    found_schemas = schemas(project, (project / "recipe.kd").read_text())
    expected = {"q": "str", "turns": "messages", "meta": "map", "a": "str", "tags": "list"}
    assert found_schemas["chat"] == found_schemas["pchat"] == expected
    inline = "dataset rows = inline([{m: {k: 1}, l: [1]}])\n"
    assert schemas(project, inline)["rows"] == {"m": "map", "l": "list"}


def test_a_list_or_map_column_is_no_train_target(project: Path):
    for data, column, kind in (("chat", "tags", "a list"), ("pchat", "meta", "a map")):
        body = (
            'prompt ask = "Q: {{ q }}"\n'
            f"train t {{ student = student  data = {data}  prompt = ask  target = {column}\n"
            "  loss sft weight 1 }\n"
        )
        d = only(structured(project, body), "KD0211")
        assert d.message == f"`target` names `{column}`, which holds {kind}, not text"
        line = body.splitlines()[1]
        assert (d.span.line, d.span.column) == (8, line.index(f"= {column}") + 3)
    # a text column of the same data is fine
    body = 'prompt ask = "Q: {{ q }}"\ntrain t { student = student  data = chat  prompt = ask  target = a\n  loss sft weight 1 }\n'
    assert structured(project, body) == []


def test_a_list_or_map_column_is_no_teacher_logits_target(project: Path):
    body = (
        'prompt ask = "Q: {{ q }}"\n'
        "stage soft = teacher_logits(chat) { teacher = teacher  prompt = ask  target = tags }\n"
    )  # (a conversation, `turns`, is scored on its turns)
    d = only(structured(project, body), "KD0211")
    line = body.splitlines()[1]
    assert (d.span.line, d.span.column) == (8, line.index("tags") + 1)


def test_a_prompt_printing_a_list_or_map_column_as_it_is(project: Path):
    body = (
        'prompt ask = "Q: {{ q }} {{ turns }} {{ meta }}"\n'
        "stage answers = label(chat) { teacher = teacher  prompt = ask }\n"
    )
    found_here = structured(project, body)
    line = body.splitlines()[0]
    assert [(d.code, d.span.line, d.span.column) for d in found_here] == [
        ("KD0211", 7, line.index("turns") + 1),
        ("KD0211", 7, line.index("meta") + 1),
    ]
    assert found_here[0].message == (
        "prompt `ask` prints `turns`, which holds a conversation, not text"
    )
    assert found_here[1].message == "prompt `ask` prints `meta`, which holds a map, not text"


def test_a_prompt_may_render_the_items_fields_or_json_of_a_structured_column(project: Path):
    body = (
        'prompt ask = """{% for t in turns %}{{ t.role }}: {{ t.content }}{% endfor %}'
        '{{ meta.src }} {{ meta | tojson }} {{ turns | length }}"""\n'
        "stage answers = label(chat) { teacher = teacher  prompt = ask }\n"
    )
    assert structured(project, body) == []
