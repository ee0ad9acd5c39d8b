"""Diagnostic codes of the data operators (map, explode, union, column keep/drop, data export) and expressions over structured values."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0120",
        "map that changes nothing, or narrowed twice",
        "A `map` stage computes columns, one `COLUMN = EXPR` line each (`prompt = question + "
        '"\\n" + context`), and keeps every input column unless `keep = [...]` names those kept '
        "or `drop = [...]` those left out. A `map` with none of these changes nothing; one with "
        "both `keep` and `drop` says the same thing twice: give one of them.",
    ),
    (
        "KD0121",
        "explode without exactly one column",
        "`explode(input) { column = EXPR }` takes exactly one `COLUMN = EXPR` line: the list EXPR "
        "gives on each row is taken apart into one row per item, the item in COLUMN. To take "
        "apart several lists, chain `explode` stages.",
    ),
    (
        "KD0122",
        "union of one input",
        "`union(a, b, ...)` appends the rows of two or more datasets or stages, one after "
        "another, with a `source` column naming each row's input; it needs at least two inputs.",
    ),
    (
        "KD0230",
        "no such field",
        "A conversation turn (an item of a `messages` column, such as `last(messages)` or "
        "`messages[0]`) has exactly two fields, `role` and `content`, both strings; the "
        "expression reads another. The help line suggests the closest field.",
    ),
    (
        "KD0231",
        "explode of a value that is no list",
        "The expression of an `explode` line must give a list on each row (a list column, "
        '`split(text, "\\n")`, `json(text)` of a JSON list, a conversation); its items become '
        "rows. This one gives a single value.",
    ),
    (
        "KD0232",
        "union of inputs with other columns",
        "The inputs of a `union` must have the same columns, so that every row of the result has "
        "them all. Give them the same columns first with a `map` stage (computed columns, "
        "`keep = [...]`, `drop = [...]`).",
    ),
    (
        "KD0233",
        "union of columns of different types",
        "A column of the inputs of a `union` holds values of one type in one input and of "
        "another in another (text here, numbers there). Convert one of them with a `map` stage "
        "(`score = float(score)`, `id = str(id)`). A column whose type is not known before the "
        "run goes with any.",
    ),
    (
        "KD0234",
        "union's source column exists already",
        "`union` writes each row's origin (the name of its input) into its `source` column, "
        'named `source` unless `source = "NAME"` says otherwise; the inputs already have a '
        "column of that name. Name the source column otherwise.",
    ),
    (
        "KD0235",
        "select settings that do not fit together",
        "A stratified `select` (`stratify = COLUMN`) keeps `per_bin` rows from each stratum: "
        "give `per_bin` instead of `n`. `per_bin` and `bins` mean nothing without `stratify`; "
        "`bins` (ascending edges) divide a numeric column only.",
    ),
    (
        "KD0236",
        "judge settings that do not fit together",
        "A `judge` gives one score (`output`, `scale`) or, with `metrics = {name: [low, high], "
        "...}`, one column per metric from a JSON answer; `output` and `scale` mean nothing "
        "with `metrics`, and `rationale` (the column keeping the judge's reasons) needs them.",
    ),
    (
        "KD0237",
        "label settings that do not fit together",
        "A `label` has one writer (`teacher = m`) or several (`teachers = [m1, m2, ...]`, with "
        "`route = round_robin | all | sample(n = N)` and `teacher_column`), not both; several "
        "teachers answer plain prompts once each (no `samples`, no `messages`), and a "
        "`sample(n = N)` route takes at most as many teachers as there are.",
    ),
]
