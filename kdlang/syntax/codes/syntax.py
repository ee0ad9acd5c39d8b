"""Diagnostic codes KD00xx: syntax (the parser and the lexer)."""

TABLE = [
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
    (
        "KD0011",
        "nesting too deep",
        "Expressions, lists and maps nest at most 100 levels (`not not ... x`, a chain of "
        "thousands of `+`, lists inside lists); recipes people write nest under 15. Name a part "
        "in its own declaration (a `dataset` of inline rows, a `prompt`), or split the "
        "expression.",
    ),
    (
        "KD0012",
        "number too large",
        "A number literal no setting could take: an integer of more than 30 digits, or a "
        "floating-point number past about 1.8e308, which would be infinity. Counts, sizes and "
        "rates of a recipe fit in a few digits.",
    ),
]
