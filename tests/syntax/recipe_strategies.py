"""Hypothesis strategies that write recipe texts.

``syntactic_recipes()`` follows the grammar only: any declaration, statement and expression, with
random whitespace, blank lines and comments wherever whitespace may go. Such a recipe parses,
though lowering may well reject it.

``valid_recipes()`` writes recipes that also lower without a diagnostic: real models, datasets,
prompts, stages, a train block with losses and schedules, an eval and an export.
"""

from __future__ import annotations

from hypothesis import strategies as st

from kdlang.syntax.parser import KEYWORDS

# -- lexical pieces --------------------------------------------------------------------------------

NAME_POOL = ["a", "b", "x1", "teacher", "student", "rationale", "answer", "q_2", "_tmp", "Data"]
assert not set(NAME_POOL) & KEYWORDS
NAMES = st.sampled_from(NAME_POOL)

# Setting keys may be keywords: inside a block `prompt = solve` names a setting. (`temperature`
# and `by` are left out: right after a `loss` or `decontaminate` line they continue that line.)
KEYS = st.sampled_from(["a", "samples", "teacher", "prompt", "model", "dataset", "weight", "to"])

# Comments may hold anything but a new line, form feeds and Unicode line separators included.
COMMENT_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8", exclude_characters="\n\r", exclude_categories=["Cs"]),
        st.sampled_from(["\x0c", "\x0b", "\x85", "\u2028", "\u2029"]),
    ),
    max_size=12,
)


@st.composite
def comment(draw) -> str:
    return "#" + draw(COMMENT_TEXT)


@st.composite
def gap(draw) -> str:
    """Whitespace between two tokens: spaces, tabs, new lines, blank lines, comments."""
    chosen = draw(st.sampled_from([" ", " ", " ", "  ", "\t", "\n", "\n\n", "\n  ", "COMMENT"]))
    return chosen.replace("COMMENT", "  " + draw(comment()) + "\n")


@st.composite
def space(draw) -> str:
    """Whitespace where a new line would read oddly but is allowed all the same."""
    return draw(st.sampled_from([" ", " ", " ", "  ", "\n    ", "GAP"])).replace("GAP", draw(gap()))


SAFE_CHARS = st.characters(
    codec="utf-8",
    exclude_characters="\"'\\\n\r",
    exclude_categories=["Cs", "Cc"],
)


@st.composite
def string_literal(draw) -> str:
    kind = draw(st.sampled_from(["double", "single", "triple", "raw", "raw_single", "raw_triple"]))
    pieces = draw(
        st.lists(
            st.one_of(
                st.text(SAFE_CHARS, min_size=1, max_size=6),
                st.sampled_from(["\\n", "\\t", "\\\\", "\\u00e9", "{{ q }}", "#", " "]),
            ),
            max_size=5,
        )
    )
    body = "".join(pieces)
    if kind == "double":
        return '"' + body + draw(st.sampled_from(["", '\\"', "'"])) + '"'
    if kind == "single":
        return "'" + body + draw(st.sampled_from(["", "\\'", '"'])) + "'"
    if kind == "triple":
        return '"""' + body + draw(st.sampled_from(["", "\n", '\n"quoted"\n', "\\\n"])) + '"""'
    raw_body = body.replace("\\\\", "\\d").replace("\\u", "\\w")
    if kind == "raw":
        return 'r"' + raw_body + '"'
    if kind == "raw_single":
        return "r'" + raw_body + "'"
    return 'r"""' + raw_body + "\n" + '"""'


NUMBERS = st.one_of(
    st.integers(0, 10**6).map(str),
    st.sampled_from(["0.5", "3e-4", "1.5E+3", "2e3", "10.25", "0.0", "1e-12"]),
    st.integers(0, 100).map(lambda n: f"{n}%"),
    st.sampled_from(["2.5%", "0.5%"]),
)

# -- expressions, written with their binding strength ----------------------------------------------
# Levels as in the grammar: or 1, and 2, not 3, comparison 4, range 5, sum 6, product 7,
# negation 8, atom 9. An operand weaker than its place needs parentheses.


def _wrap(draw, text: str, level: int, need: int) -> str:
    if level < need or draw(st.integers(0, 9)) == 0:
        return "(" + draw(st.sampled_from(["", " ", "\n"])) + text + ")"
    return text


@st.composite
def atom(draw) -> tuple[str, int]:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(NUMBERS), 9
    if choice == 1:
        return draw(string_literal()), 9
    if choice == 2:
        return draw(st.sampled_from(["true", "false", "null"])), 9
    if choice == 3:
        return ".".join(draw(st.lists(NAMES, min_size=1, max_size=3))), 9
    return draw(NAMES), 9


def _operand(draw, children, need: int) -> str:
    text, level = draw(children)
    return _wrap(draw, text, level, need)


def _extend(children):
    @st.composite
    def compound(draw) -> tuple[str, int]:
        form = draw(st.integers(0, 11))
        if form == 0:  # call
            args = [_operand(draw, children, 0) for _ in range(draw(st.integers(0, 2)))]
            for _ in range(draw(st.integers(0, 2))):
                args.append(draw(KEYS) + draw(space()) + "=" + " " + _operand(draw, children, 0))
            trailing = draw(st.sampled_from(["", ","])) if args else ""
            sep = "," + draw(space())
            return draw(NAMES) + "(" + sep.join(args) + trailing + ")", 9
        if form == 1:  # list
            items = [_operand(draw, children, 0) for _ in range(draw(st.integers(0, 3)))]
            return "[" + ("," + draw(space())).join(items) + "]", 9
        if form == 2:  # map
            entries = []
            for _ in range(draw(st.integers(0, 3))):
                key = draw(st.one_of(NAMES, st.sampled_from(['"a key"', "'k'", "prompt"])))
                entries.append(key + ":" + draw(space()) + _operand(draw, children, 0))
            return "{" + ", ".join(entries) + "}", 9
        if form == 3:
            return "-" + draw(st.sampled_from(["", " "])) + _operand(draw, children, 8), 8
        if form == 4:
            return "not " + _operand(draw, children, 3), 3
        if form in (5, 6):
            op = draw(st.sampled_from(["+", "-", "*", "/"]))
            level = 6 if op in "+-" else 7
            left = _operand(draw, children, level)
            right = _operand(draw, children, level + 1)
            return left + draw(space()) + op + " " + right, level
        if form == 7:
            op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]))
            left = _operand(draw, children, 5)
            return left + " " + op + draw(space()) + _operand(draw, children, 5), 4
        if form == 8:
            return _operand(draw, children, 6) + ".." + _operand(draw, children, 6), 5
        op = draw(st.sampled_from(["and", "or"]))
        level = 2 if op == "and" else 1
        left = _operand(draw, children, level)
        return left + draw(space()) + op + " " + _operand(draw, children, level + 1), level

    return compound()


EXPRESSIONS = st.recursive(atom(), _extend, max_leaves=8)


@st.composite
def expression(draw) -> str:
    text, _ = draw(EXPRESSIONS)
    return text


@st.composite
def call(draw) -> str:
    args = [draw(expression()) for _ in range(draw(st.integers(0, 2)))]
    for _ in range(draw(st.integers(0, 2))):
        args.append(draw(KEYS) + " = " + draw(expression()))
    name = ".".join(draw(st.lists(NAMES, min_size=1, max_size=2)))
    return name + "(" + ("," + draw(space())).join(args) + ")"


@st.composite
def schedule_arg(draw) -> str:
    """A call whose first argument is a transition, as schedules have."""
    start, end = draw(expression()), draw(expression())
    rest = "".join(", over = " + draw(NUMBERS) for _ in range(draw(st.integers(0, 1))))
    return draw(NAMES) + "(" + start + " -> " + end + rest + ")"


# -- statements and declarations -------------------------------------------------------------------


@st.composite
def statement(draw) -> str:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return (
            draw(KEYS) + draw(st.sampled_from([" = ", " =\n    ", "=", " = "])) + draw(expression())
        )
    if kind == 4:
        text = "loss " + draw(NAMES)
        if draw(st.booleans()):
            text += "(" + ", ".join(f"{draw(NAMES)} = {draw(expression())}" for _ in range(2)) + ")"
        text += " weight " + draw(st.one_of(expression(), schedule_arg()))
        if draw(st.booleans()):
            text += draw(gap()) + "temperature " + draw(expression())
        return text
    if kind == 5:
        return "keep " + draw(expression())
    if kind == 6:
        return "dedup " + draw(NAMES) + " by " + draw(st.one_of(NAMES, call()))
    if kind == 7:
        text = (
            "decontaminate "
            + draw(NAMES)
            + " against "
            + ".".join(draw(st.lists(NAMES, min_size=1, max_size=2)))
        )
        return text + (" by " + draw(call()) if draw(st.booleans()) else "")
    name = draw(NAMES) + " = " if draw(st.booleans()) else ""
    return "metric " + name + draw(expression())


@st.composite
def block(draw) -> str:
    stmts = draw(st.lists(statement(), max_size=4))
    if not stmts:
        return draw(st.sampled_from(["{}", "{ }", "{\n}", "{\n  " + draw(comment()) + "\n}"]))
    body = "".join(draw(gap()) + "  " + s for s in stmts)
    return "{" + body + draw(st.sampled_from(["\n", " ", "\n\n"])) + "}"


@st.composite
def optional_block(draw) -> str:
    return (" " + draw(block())) if draw(st.booleans()) else ""


@st.composite
def declaration(draw) -> str:
    kind = draw(st.integers(0, 8))
    name = draw(NAMES)
    if kind == 0:
        return "recipe " + draw(string_literal()) + " " + draw(block())
    if kind == 1:
        return "import " + draw(string_literal())
    if kind == 2:
        return f"model {name} = " + draw(expression())
    if kind == 3:
        return f"dataset {name} = " + draw(expression()) + draw(optional_block())
    if kind == 4:
        return f"prompt {name} =" + draw(space()) + draw(expression())
    if kind == 5:
        return f"stage {name} = " + draw(call()) + draw(optional_block())
    if kind == 6:
        return f"train {name} " + draw(block())
    if kind == 7:
        return f"eval {name} = " + draw(call()) + draw(optional_block())
    return f"export {name} to " + draw(expression()) + draw(optional_block())


@st.composite
def syntactic_recipes(draw) -> str:
    decls = draw(st.lists(declaration(), max_size=5))
    text = draw(st.sampled_from(["", "\n", "# header\n", "\n\n"]))
    for decl in decls:
        text += decl + draw(
            st.sampled_from(["\n", "\n\n", "  " + draw(comment()) + "\n", "\n\n\n"])
        )
    return text + draw(st.sampled_from(["", "# trailing comment\n", "\n"]))


# -- recipes that lower cleanly --------------------------------------------------------------------

PROMPT_TEXTS = st.sampled_from(
    [
        '"Q: {{ question }}\\nA:"',
        '"""\nQ: {{ question }}\nA:"""',
        "r'Q: {{ question }} \\d'",
        '"""Solve: {{ question }}\n"Show" the steps.\n"""',
    ]
)
DURATIONS = st.one_of(st.integers(1, 500).map(str), st.integers(1, 100).map(lambda n: f"{n}%"))
UNIT = st.sampled_from(["0.0", "0.25", "0.5", "1.0", "1", "0", "5e-1"])


@st.composite
def weight_value(draw) -> str:
    form = draw(st.integers(0, 4))
    if form == 0:
        return draw(UNIT)
    if form == 1:
        return f"linear({draw(UNIT)} -> {draw(UNIT)}, over = {draw(DURATIONS)})"
    if form == 2:
        return f"cosine({draw(UNIT)} -> {draw(UNIT)}, start = {draw(DURATIONS)})"
    if form == 3:
        return f"step({draw(UNIT)} -> {draw(UNIT)}, at = {draw(DURATIONS)})"
    return f"warmup({draw(UNIT)}, over = {draw(DURATIONS)})"


@st.composite
def keep_condition(draw) -> str:
    return draw(
        st.sampled_from(
            [
                "len(rationale) in 8..400",
                "len(rationale) > 3 and not contains(rationale, 'sorry')",
                'matches(rationale, r"#### -?\\d+\\s*$")',
                "extract(rationale, r'#### (-?\\d+)') == answer",
                "(len(rationale) - 1) * 2 >= 10 or answer in ['1', '2']",
                "-len(rationale) < -2",
                "not (answer not in ['x'])",
            ]
        )
    )


@st.composite
def valid_recipes(draw) -> str:
    def g() -> str:
        return draw(gap())

    lines = []
    if draw(st.booleans()):
        lines.append(
            f'recipe "r-{draw(st.integers(0, 99))}" {{{g()}seed = {draw(st.integers(0, 9999))}\n}}'
        )
    lora = draw(
        st.sampled_from(
            ["", ", lora = lora(r = 8)", ", lora = lora(r = 4, alpha = 8.0, dropout = 0.1)"]
        )
    )
    dtype = draw(st.sampled_from(["", ", dtype = bfloat16", ', dtype = "float32"']))
    lines.append(f'model teacher = hf("org/teacher"{dtype})  # white-box')
    lines.append(f'model student = hf({g()}"org/student"{lora})')
    lines.append(
        'dataset problems = inline([\n  {question: "1 + 1?", answer: "2"},'
        + g()
        + '{"question": "2 * 3?", answer: "6"},\n])'
    )
    lines.append(f"prompt solve = {draw(PROMPT_TEXTS)}")
    settings = [
        "teacher = teacher",
        "prompt = solve",
        f"samples = {draw(st.integers(1, 8))}",
        f"temperature = {draw(UNIT)}",
        f"max_tokens = {draw(st.integers(1, 512))}",
        "output = rationale",
    ]
    settings = draw(st.permutations(settings))
    lines.append(
        "stage rationales = label(problems) {" + "".join(g() + " " + s for s in settings) + "\n}"
    )
    rules = [f"keep {draw(keep_condition())}" for _ in range(draw(st.integers(1, 3)))]
    if draw(st.booleans()):
        rules.append(
            "dedup rationale by " + draw(st.sampled_from(["exact", "minhash(threshold = 0.8)"]))
        )
    lines.append("stage clean = filter(rationales) {" + "".join("\n  " + r for r in rules) + "\n}")
    extras = draw(st.sets(st.sampled_from(["judge", "expand", "logits", "openai"])))
    if "openai" in extras:
        url = draw(st.sampled_from(['env("URL")', '"http://localhost:8000/v1"']))
        lines.append(
            'model grader = openai("gpt-4o-mini", api_key = env("OPENAI_API_KEY"),'
            + g()
            + f"base_url = {url})"
        )
    if "judge" in extras:
        lines.append(
            f"stage scored = judge(rationales) {{ judge = teacher  prompt = solve"
            f"  scale = [{draw(st.integers(0, 3))}, 10] }}"
        )
    if "expand" in extras:
        method = draw(st.sampled_from(["self_instruct", "evol_instruct", '"evol_instruct"']))
        lines.append(
            f"stage more = expand(problems) {{ teacher = teacher  column = question"
            f"  method = {method}  rounds = {draw(st.integers(1, 3))} }}"
        )
    if "logits" in extras:
        lines.append(
            "stage soft = teacher_logits(clean) {"
            f"{g()}teacher = teacher prompt = solve target = rationale top_k = {draw(st.integers(1, 64))}\n}}"
        )
    losses = draw(
        st.lists(
            st.sampled_from(["sft", "forward_kl", "reverse_kl", "jsd", "tvd", "skew_kl"]),
            min_size=1,
            max_size=3,
            unique=True,
        )
    )
    loss_lines = []
    for loss in losses:
        options = {"jsd": "(beta = 0.5)", "skew_kl": "(alpha = 0.1)"}.get(loss, "")
        text = f"loss {loss}{options} weight {draw(weight_value())}"
        if loss != "sft" and draw(st.booleans()):
            text += f" temperature {draw(st.sampled_from(['2.0', '1', 'linear(4.0 -> 1.0)']))}"
        loss_lines.append(text)
    schedule = draw(st.sampled_from(["constant", "cosine(warmup = 5%)", "linear(warmup = 10)"]))
    lr = draw(st.sampled_from(["3e-4", "1e-5", "0.001", "2 * 1e-4"]))
    lines.append(
        "train distill {\n  student = student  teacher = teacher  data = clean\n"
        f"  prompt = solve  target = rationale  lr = {lr}  lr_schedule = {schedule}\n"
        + "".join(f"  {line}\n" for line in loss_lines)
        + "}"
    )
    lines.append(
        "eval accuracy = evaluate(distill, problems) {\n  prompt = solve\n"
        '  metric exact_match(extract(output, r"#### (-?\\d+)"), answer)\n}'
    )
    if draw(st.booleans()):
        lines.append('export distill to "runs/student" { card = false }')
    return "\n".join(line + draw(st.sampled_from(["\n", "\n\n", "  # note\n"])) for line in lines)
