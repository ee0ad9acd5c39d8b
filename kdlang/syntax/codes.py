"""Every diagnostic code kdlang emits, with the explanation ``kdlang explain CODE`` prints.

Ranges: KD00xx syntax, KD01xx structure and values (lowering to the IR), KD02xx names, columns,
templates and expression types (the checker), KD03xx compatibility between models, data and
losses, KD04xx files and command-line overrides. ``docs/diagnostics.md`` is generated from this
table (``python -m kdlang.ir.vocabulary > docs/diagnostics.md``) and a test keeps them equal.

An explanation that lists what the language has (its stage operators, its losses ...) names the
list as a placeholder (``{losses}``): the IR's registries fill it in (:mod:`kdlang.ir.vocabulary`),
so a new operator or loss is listed without an edit here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    code: str
    title: str
    explanation: str


_TABLE = [
    # -- syntax -----------------------------------------------------------------------------
    (
        "KD0001",
        "unexpected character",
        "The text contains a character that cannot start any token of the language, such as `@`, "
        "`$` or a stray backtick. Remove it, or put it inside a string.",
    ),
    (
        "KD0002",
        "syntax error",
        "The parser met a token that cannot appear at this place. The message lists what it "
        "expected. Declarations start with `recipe`, `import`, `model`, `dataset`, `prompt`, "
        "`stage`, `train`, `eval` or `export`; inside blocks come `key = value` settings and the "
        "`loss`, `keep`, `dedup`, `decontaminate` and `metric` lines. `model`, `prompt` and "
        "`import` declarations take no `{ ... }` block: a model's settings go in its call "
        '(`hf("...", dtype = bfloat16)`), a prompt is its template string.',
    ),
    (
        "KD0003",
        "unclosed string",
        "A string literal has no closing quote on its line. Ordinary strings (`\"...\"`, `'...'`) "
        'end on the line they start; use a triple-quoted string (`"""..."""`) for text '
        "spanning several lines, such as prompts.",
    ),
    (
        "KD0004",
        "unclosed block or bracket",
        "The file ended while a `{`, `[` or `(` was still open. The diagnostic points at the "
        "opening bracket that was never closed.",
    ),
    (
        "KD0005",
        "missing `=`",
        "A declaration or setting names something and then gives its value without `=` between "
        'them: write `model teacher = hf("...")`, `samples = 4`.',
    ),
    (
        "KD0006",
        "stray comma",
        "Settings in a block are separated by whitespace or new lines, not commas. Commas "
        "separate the items of lists (`[a, b]`), maps (`{a: 1, b: 2}`) and call arguments.",
    ),
    (
        "KD0007",
        "unknown escape sequence",
        "Ordinary strings understand `\\n`, `\\t`, `\\r`, `\\0`, `\\\\`, `\\\"`, `\\'` and "
        "`\\uXXXX`. Regular expressions need their backslashes: write them as raw strings, "
        '`r"#### (-?\\d+)"`, where every backslash is kept as written.',
    ),
    (
        "KD0008",
        "missing value",
        "An `=` (or a `weight`, `temperature`, `keep` ...) is followed by something that is not "
        "a value. Give the value: a string, number, percentage, list, map, name or call.",
    ),
    (
        "KD0009",
        "loss line without weight",
        "A loss line reads `loss NAME[(options)] weight EXPR [temperature EXPR]`; the weight is "
        "required, so that every term's contribution to the total loss is explicit. Use "
        "`weight 1.0` for an unweighted term.",
    ),
    (
        "KD0010",
        "unexpected closing bracket",
        "A `}`, `]` or `)` closes nothing: there is one more closing than opening bracket.",
    ),
    # -- structure and values -----------------------------------------------------------------
    (
        "KD0101",
        "unknown operator",
        "A stage or eval names an operator kdlang does not have. Stage operators: "
        "{stage_operators}; eval operator: `evaluate`. `docs/language.md` describes each.",
    ),
    (
        "KD0102",
        "unknown setting",
        "A block (or a call's keyword arguments) sets a field the declaration does not have. The "
        "help line suggests the closest known field; `docs/language.md` lists every field.",
    ),
    (
        "KD0103",
        "wrong value type",
        "A setting's value has the wrong type: for instance a string where a number is "
        "expected, a number where a model reference is expected, or a list of the wrong items.",
    ),
    (
        "KD0104",
        "value out of range",
        "A setting's value is outside what it may take: negative epochs, temperature <= 0, "
        "beta or alpha outside [0, 1], top_k < 1, a probability above 1, ...",
    ),
    (
        "KD0105",
        "missing required setting",
        "A declaration lacks a setting it cannot do without, such as `teacher` in a `label` "
        "stage or `student` and `data` in a `train` block.",
    ),
    (
        "KD0106",
        "duplicate setting",
        "The same setting is given twice in one block or call; the second would silently win. "
        "Keep one.",
    ),
    (
        "KD0107",
        "unknown source kind",
        "A model or dataset is created by a function kdlang does not know. Models: "
        "{model_kinds}. Datasets: {dataset_kinds}.",
    ),
    (
        "KD0108",
        "unknown loss",
        "A `loss` line names a loss kdlang does not have. Losses: {losses}.",
    ),
    (
        "KD0109",
        "statement not allowed here",
        "`loss` lines belong in `train` blocks, `keep`/`dedup`/`decontaminate` in `filter` "
        "stages and `metric` lines in `eval` blocks.",
    ),
    (
        "KD0110",
        "invalid schedule",
        "A schedule must be one of `constant(v)`, `linear(a -> b, over = N% | steps)`, "
        "`cosine(a -> b, over = ...)`, `step(a -> b, at = N% | steps)`, `warmup(v, over = ...)`; "
        "learning-rate schedules are `constant`, `linear(warmup = ...)` and `cosine(warmup = ...)`.",
    ),
    ("KD0111", "duplicate recipe header", 'A file has at most one `recipe "name" { ... }` header.'),
    (
        "KD0112",
        "wrong operator arguments",
        "An operator call has the wrong positional arguments: each stage operator takes its input "
        "stage or dataset as its one positional argument (`label(problems)`), `evaluate` takes "
        "the trained model and the dataset (`evaluate(distill, heldout)`).",
    ),
    # -- names, columns, templates, expressions ---------------------------------------------------
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
    # -- compatibility --------------------------------------------------------------------------
    (
        "KD0301",
        "token-level loss needs a white-box teacher",
        "Token-level losses ({token_losses}) and hidden-state losses ({hidden_losses}) compare the student's distribution with the teacher's, so the "
        "teacher's logits must be available: an `hf(...)` model, or cached top-k log-probs from a "
        "`teacher_logits` stage. A black-box (`openai`) teacher supports sequence-level KD: train "
        "with `loss sft` on its text, or cache its top-k log-probs where the server returns them.",
    ),
    (
        "KD0302",
        "vocabulary mismatch",
        "Token-level losses compare distributions position by position over the same vocabulary; "
        "the teacher's and the student's tokenizers differ. Use a teacher and student of one "
        "family, or sequence-level KD (`loss sft` on teacher text).",
    ),
    (
        "KD0303",
        "on-policy distillation needs a generator",
        "`on_policy > 0` samples targets from the student during training and needs a token-level "
        "loss against an online white-box teacher (the `teacher` setting of the train block).",
    ),
    (
        "KD0304",
        "dpo needs preference pairs",
        "`loss dpo` trains on chosen/rejected pairs: its data must come from a `pairs` stage (or "
        "a dataset with `prompt`, `chosen` and `rejected` columns).",
    ),
    (
        "KD0305",
        "schedule leaves the valid range",
        "A scheduled value (weight, temperature, beta, alpha, on_policy ...) takes, somewhere "
        "during training, a value its setting does not allow, e.g. a beta schedule going past 1.",
    ),
    (
        "KD0306",
        "hidden-state loss needs layers",
        "`hidden_mse` and `hidden_cosine` compare hidden states of chosen layers: give "
        "`layers = [[student_layer, teacher_layer], ...]` and an online `hf` teacher.",
    ),
    (
        "KD0307",
        "top-k cache incompatible with the loss",
        "A cached top-k teacher distribution puts no mass outside its k ids, so a loss that "
        "weighs the student's mass there would be infinite: {topk_infinite}. Use one of "
        "{topk_losses} with cached logits, or an online teacher.",
    ),
    # -- files and overrides --------------------------------------------------------------------
    (
        "KD0401",
        "unknown override path",
        "A `--set path=value` names a setting that does not exist. Paths are `DECL.setting` "
        "(`distill.lr`), `recipe.setting` (`recipe.seed`), or `DECL.loss.NAME.weight`.",
    ),
    (
        "KD0402",
        "file not found",
        "An imported `.kd` file, a local data file or a local model folder does not exist (paths "
        "are relative to the recipe file). A model path is local when it cannot be a hub id: "
        "absolute, starting with `./`, `../` or `~`, or of three or more segments; `name` and "
        "`org/name` are hub ids unless such a folder exists beside the recipe.",
    ),
    (
        "KD0403",
        "unreadable data file",
        "A local data file could not be read to infer its columns (bad JSON line, empty file, "
        "unknown format). Fix the file or declare `columns = [...]`.",
    ),
    (
        "KD0404",
        "invalid override value",
        "The value of a `--set path=value` is not a valid expression of the language.",
    ),
    (
        "KD0405",
        "unsafe export path",
        "An `export` puts the student's folder in place of its destination, so the destination "
        "must be a folder of its own. Refused: an empty path or `.` (the working directory), the "
        "working directory under any other spelling (`a/..`, its absolute path), the cache "
        "folder (`.kdcache`) or a folder inside it, and any folder above the working directory "
        "or the cache (`..`, `/`). Export paths are relative to the working directory "
        "(`--workdir`, by default the current one); `check` judges them against the current "
        "directory and `run` again against the folders it uses. Write "
        '`export NAME to "exports/NAME"`.',
    ),
    (
        "KD0406",
        "environment variable not set",
        'A warning: the recipe reads a secret with `env("NAME")` and the variable is not set '
        "where `check` or `plan` ran (secrets are often set only where recipes run). `kdlang run` "
        "refuses to start, before its first stage, when a stage that will run needs it; stages "
        "already cached need no secret. Set it (`export NAME=...`) before running.",
    ),
]

CODES: dict[str, Code] = {code: Code(code, title, text) for code, title, text in _TABLE}


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def fill(text: str, words: Mapping[str, str]) -> str:
    """``text`` with each ``{name}`` of ``words`` replaced (other braces are the language's)."""
    return _PLACEHOLDER.sub(lambda found: words.get(found[1], found[0]), text)


def explain(code: str, words: Mapping[str, str]) -> str | None:
    """What ``code`` means, its lists filled in from ``words`` (:mod:`kdlang.ir.vocabulary`)."""
    entry = CODES.get(code.upper())
    if entry is None:
        return None
    return f"{entry.code}: {entry.title}\n\n{fill(entry.explanation, words)}\n"


def markdown(words: Mapping[str, str]) -> str:
    """The text of ``docs/diagnostics.md``."""
    lines = [
        "# Diagnostics",
        "",
        "Every error and warning kdlang reports has a code. `kdlang explain CODE` prints the",
        "explanation below; `kdlang check --format json` gives each diagnostic as an object with",
        "`severity, code, message, file, line, column, end_line, end_column, help, notes`.",
        "",
        "Codes: KD00xx syntax, KD01xx structure and values, KD02xx names, columns, templates and",
        "expressions, KD03xx compatibility between models, data and losses, KD04xx files and",
        "overrides.",
        "",
    ]
    for entry in CODES.values():
        lines += [f"## {entry.code}: {entry.title}", "", fill(entry.explanation, words), ""]
    return "\n".join(lines)
