"""``filter``: keep rules, exact and MinHash dedup and decontamination on real rows."""

from __future__ import annotations

import re

import pytest

from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

GREEK = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
]
LONG = " ".join(GREEK)
NEAR = LONG.replace("fourteen", "forty")  # one word of 39 changed
OTHER = "the quick brown fox jumps over the lazy dog while a cat watches from the old red barn"
HELDOUT = "a completely different sentence about rivers mountains and the sea at dawn"

ROWS = [
    {"text": f"{LONG} #### 1", "answer": "1"},  # kept
    {"text": f"{NEAR} #### 1", "answer": "1"},  # near-duplicate of the first
    {"text": f"{OTHER} #### 2", "answer": "2"},  # kept
    {"text": f"{OTHER}   ####  2".replace(" ", "  ", 3), "answer": "2"},  # exact dup up to spaces
    {"text": f"{OTHER} no marker", "answer": "2"},  # fails the format rule
    {"text": f"{OTHER} and more #### 9", "answer": "3"},  # wrong answer
    {"text": "#### 4", "answer": "4"},  # too short
    {"text": "we saw rivers mountains and the sea at dawn today #### 5", "answer": "5"},
]


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = re.findall(r"\w+", text.lower())
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: str, b: str, n: int) -> float:
    x, y = shingles(a, n), shingles(b, n)
    return len(x & y) / len(x | y)


def test_rules_apply_in_order_and_count_what_they_drop(tmp_path):
    # the premises of the expected result, computed independently of the filter
    assert jaccard(ROWS[0]["text"], ROWS[1]["text"], 3) > 0.85
    assert jaccard(ROWS[0]["text"], ROWS[2]["text"], 3) == 0.0
    assert shingles(ROWS[7]["text"], 6) & shingles(HELDOUT, 6)
    assert not shingles(ROWS[2]["text"], 6) & shingles(HELDOUT, 6)

    data = ", ".join(
        "{" + ", ".join(f"{k}: {_quote(v)}" for k, v in row.items()) + "}" for row in ROWS
    )
    recipe = write_recipe(
        tmp_path,
        f"""
dataset data = inline([{data}])
dataset heldout = inline([{{text: "{HELDOUT}", answer: "0"}}])

stage kept = filter(data) {{
  keep matches(text, r"#### *\\d+$")
  keep extract(text, r"#### *(\\d+)") == answer
  keep words(text) in 3..60
  dedup text by exact
  dedup text by minhash(threshold = 0.7, ngram = 3)
  decontaminate text against heldout by ngram(n = 6)
}}
""",
    )
    document = run_recipe(recipe)
    assert rows(document, "kept") == [ROWS[0], ROWS[2]]
    result = node(document, "kept")
    assert result["rows_in"] == 8 and result["rows_out"] == 2
    assert list(result["dropped"].values()) == [1, 1, 1, 1, 1, 1]
    assert list(result["dropped"])[3:] == [
        "dedup text by exact",
        "dedup text by minhash",
        "decontaminate text against heldout",
    ]


def test_minhash_keeps_distinct_rows_and_a_strict_threshold_keeps_near_duplicates(tmp_path):
    data = ", ".join(f'{{text: "{t}"}}' for t in (LONG, NEAR, OTHER))
    recipe = write_recipe(
        tmp_path,
        f"""
dataset data = inline([{data}])
stage loose = filter(data) {{ dedup text by minhash(threshold = 0.5, ngram = 3) }}
stage strict = filter(data) {{ dedup text by minhash(threshold = 0.99, ngram = 3) }}
stage by_word = filter(data) {{ dedup text by minhash(threshold = 0.5, ngram = 1) }}
""",
    )
    document = run_recipe(recipe)
    assert [r["text"] for r in rows(document, "loose")] == [LONG, OTHER]
    assert [r["text"] for r in rows(document, "strict")] == [LONG, NEAR, OTHER]
    assert [r["text"] for r in rows(document, "by_word")] == [LONG, OTHER]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
