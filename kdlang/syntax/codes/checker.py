"""Diagnostic codes KD02xx: names, columns, templates and expression types (the checker)."""

TABLE = [
    (
        "KD0201",
        "undefined name",
        "A reference names no declaration of the recipe or of its imports. The help line suggests "
        "the closest defined name.",
    ),
    (
        "KD0202",
        "duplicate declaration",
        "Two declarations define the same name (possibly one in an imported file). Names are "
        "global to a recipe and its imports; rename one. The note points at the first definition.",
    ),
    (
        "KD0203",
        "import cycle",
        "Files import each other in a cycle. Move what they share into a third file.",
    ),
    (
        "KD0204",
        "wrong kind of reference",
        "A reference names a declaration of the wrong kind: for instance a dataset where a model "
        "is expected, or a prompt where a stage is expected.",
    ),
    (
        "KD0205",
        "unknown column",
        "An expression or setting uses a column that the data does not have at this stage. Each "
        "dataset declares or infers its columns and each stage adds the columns it names "
        "(`output = rationale`); the help line suggests the closest available column.",
    ),
    (
        "KD0206",
        "undefined template variable",
        "A prompt template uses `{{ name }}` where `name` is no column of the data the prompt is "
        "rendered against. The diagnostic points at the variable inside the prompt's text.",
    ),
    (
        "KD0207",
        "template syntax error",
        "A prompt is not a valid jinja2 template (an unclosed `{{`, an unknown tag, ...).",
    ),
    (
        "KD0208",
        "type error in expression",
        "An operator or function got an argument of the wrong type, e.g. `len(3)` or comparing "
        "a string with a number. Expression types: str, int, float, bool, list, null.",
    ),
    (
        "KD0209",
        "unknown function",
        "An expression calls a function the expression language does not have. The functions are "
        "listed in `docs/language.md` (len, lower, upper, strip, contains, startswith, endswith, "
        "matches, extract, count, words, lines, int, float, str, exact_match, ...).",
    ),
    (
        "KD0210",
        "dependency cycle",
        "Stages depend on each other in a cycle; a recipe's stages must form a DAG.",
    ),
    (
        "KD0211",
        "column of the wrong type",
        "A column holding a list or a map (rows of a conversation, top-k ids, a JSON object) is "
        "used where text is required: as a train's or `teacher_logits`' `target`, or printed as "
        "it is in a prompt (`{{ turns }}`). Its text would be Python's rendering of the value. "
        "Print its items in the template (`{% for t in turns %}{{ t.content }}{% endfor %}`, "
        '`{{ tags | join(", ") }}`), or pick a text column.',
    ),
    (
        "KD0212",
        "template loads another template",
        "`{% include %}`, `{% import %}`, `{% from ... import %}` and `{% extends %}` load other "
        "templates by name; kdlang renders each prompt on its own, with no template loader, so "
        "they are refused. Write the text in the prompt; to share prompts between recipes, "
        "declare them in a `.kd` file the recipes `import`.",
    ),
    (
        "KD0213",
        "template nested too deep",
        "A template's expressions or blocks are nested deeper than jinja2's parser can read "
        "(hundreds of parentheses or blocks inside each other). Split the expression "
        "(`{% set part = ... %}`) or the prompt.",
    ),
]
