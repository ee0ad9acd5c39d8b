"""Names: undefined (KD0201), declared twice (KD0202), import cycles (KD0203), references of the
wrong kind (KD0204) and dependency cycles (KD0210)."""

from __future__ import annotations

from pathlib import Path

from tests.check.support import HEADER, diagnose, found, only, write


def test_undefined_name_points_at_the_reference_and_suggests(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "stage answers = label(problemz) { teacher = teacher  prompt = solve }\n"
    )
    d = only(diagnose(project, text), "KD0201")
    assert (d.span.line, d.span.column, d.span.end_column) == (6, 23, 31)
    assert d.message == "`problemz` is not defined"
    assert d.help == 'did you mean "problems"?'


def test_undefined_name_without_a_close_one_lists_what_is_defined(project: Path):
    text = HEADER + "stage answers = label(problems) { teacher = teacher  prompt = zzz }\n"
    d = only(diagnose(project, text), "KD0201")
    assert (d.span.line, d.span.column) == (5, 63)
    assert d.help == "no prompt is declared"


def test_every_undefined_name_is_reported(project: Path):
    text = HEADER + (
        'stage a = label(nothing) { teacher = nobody  prompt = none }\nexport ghost to "out"\n'
    )
    assert found(diagnose(project, text)) == [
        ("KD0201", 5, 17),
        ("KD0201", 5, 38),
        ("KD0201", 5, 55),
        ("KD0201", 6, 8),
    ]


def test_duplicate_declaration_in_one_file_names_both_places(project: Path):
    text = HEADER + 'prompt solve = "a"\nprompt other = "b"\nmodel solve = hf("models/student")\n'
    d = only(diagnose(project, text), "KD0202")
    assert (d.span.line, d.span.column, d.span.end_column) == (7, 7, 12)
    assert d.message == "`solve` is declared twice"
    [(note, first)] = d.notes
    assert note == "first declared here"
    assert (first.file, first.line, first.column) == (str(project / "recipe.kd"), 5, 8)


def test_duplicate_declaration_across_an_import_names_both_files(project: Path):
    write(project, {"common.kd": '# shared prompts\n\nprompt solve = "Q: {{ question }}"\n'})
    text = 'import "common.kd"\n\nprompt solve = "other"\n'
    d = only(diagnose(project, text), "KD0202")
    assert (d.span.file, d.span.line, d.span.column) == (str(project / "recipe.kd"), 3, 8)
    [(_, first)] = d.notes
    assert (first.file, first.line, first.column) == (str(project / "common.kd"), 3, 8)


def test_import_cycle(project: Path):
    write(
        project,
        {
            "a.kd": 'import "b.kd"\nprompt pa = "a"\n',
            "b.kd": '# b\nimport "a.kd"\nprompt pb = "b"\n',
        },
    )
    d = only(diagnose(project, 'import "a.kd"\nprompt root = "r"\n'), "KD0203")
    assert (d.span.file, d.span.line, d.span.column) == (str(project / "b.kd"), 2, 8)
    assert d.message.endswith("a.kd -> " + str(project / "b.kd") + " -> " + str(project / "a.kd"))


def test_import_cycle_through_a_parent_folder_is_found(project: Path):
    # `sub/../recipe.kd` is `recipe.kd`: the cycle must be seen, not followed forever.
    write(project, {"sub/shared.kd": 'import "../recipe.kd"\nprompt shared = "s"\n'})
    d = only(diagnose(project, 'import "sub/shared.kd"\nprompt mine = "m"\n'), "KD0203")
    assert (d.span.file, d.span.line, d.span.column) == (str(project / "sub/shared.kd"), 1, 8)


def test_a_file_imported_twice_is_loaded_once(project: Path):
    write(
        project,
        {
            "base.kd": 'prompt solve = "Q: {{ question }}"\n',
            "left.kd": 'import "base.kd"\nprompt left = "l"\n',
            "right.kd": 'import "base.kd"\nprompt right = "r"\n',
        },
    )
    assert diagnose(project, 'import "left.kd"\nimport "right.kd"\n') == []


def test_missing_import(project: Path):
    d = only(diagnose(project, 'prompt p = "x"\nimport "nowhere.kd"\n'), "KD0402")
    assert (d.span.line, d.span.column, d.span.end_column) == (2, 8, 20)
    assert d.message == "imported file not found: nowhere.kd"


def test_wrong_kind_of_reference(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "stage answers = label(problems) {\n"
        "  teacher = heldout\n"
        "  prompt = solve\n"
        "}\n"
    )
    d = only(diagnose(project, text), "KD0204")
    assert (d.span.line, d.span.column) == (7, 13)
    assert d.message == "`teacher` expects a model, but `heldout` is a dataset"
    [(_, declared)] = d.notes
    assert (declared.line, declared.column) == (4, 9)


def test_wrong_kind_as_stage_input_and_as_prompt(project: Path):
    text = HEADER + (
        'prompt solve = "Q: {{ question }}"\n'
        "stage answers = label(solve) { teacher = teacher  prompt = student }\n"
    )
    assert found(diagnose(project, text)) == [("KD0204", 6, 23), ("KD0204", 6, 60)]


def test_student_must_be_an_hf_model(project: Path):
    text = HEADER + (
        'model api = openai("some-model")\n'
        "train distill {\n"
        "  student = api  data = problems  target = answer\n"
        "  loss sft weight 1.0\n"
        "}\n"
    )
    d = only(diagnose(project, text), "KD0204")
    assert (d.span.line, d.span.column) == (7, 13)


def test_dependency_cycle(project: Path):
    text = HEADER + (
        "stage first = filter(second) { keep len(answer) > 0 }\n"
        "stage second = filter(first) { keep len(answer) > 0 }\n"
    )
    d = only(diagnose(project, text), "KD0210")
    assert (d.span.line, d.span.column) == (5, 7)
    assert d.message.endswith("first -> second -> first")


def test_a_stage_reading_itself_is_a_cycle(project: Path):
    d = only(diagnose(project, HEADER + "stage loop = filter(loop) { keep true }\n"), "KD0210")
    assert (d.span.line, d.span.column) == (5, 7)
    assert d.message.endswith("loop -> loop")


def test_errors_of_every_kind_are_reported_together(project: Path):
    # A name error does not hide the cycle, the missing file or the template typo.
    text = HEADER + (
        'dataset lost = jsonl("data/lost.jsonl")\n'
        'prompt solve = "Q: {{ questoin }}"\n'
        "stage first = filter(second) { keep true }\n"
        "stage second = filter(first) { keep true }\n"
        "stage answers = label(problems) { teacher = nobody  prompt = solve }\n"
    )
    assert found(diagnose(project, text)) == [
        ("KD0402", 5, 22),
        ("KD0206", 6, 23),
        ("KD0210", 7, 7),
        ("KD0201", 9, 45),
    ]
