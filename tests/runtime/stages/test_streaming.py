"""The Arrow data path: artifacts whose bytes depend on their rows alone, sources read by pyarrow
giving what the Python reader gives, dedup over batches keeping what a pass over all rows keeps,
and a pipeline of many batches giving the rows a plain Python reference gives."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pytest
from kdlang.runtime.arrow import io as arrow_io
from kdlang.runtime.arrow.io import ArrowWriter, MixedColumn, read_batches
from kdlang.runtime.arrow.sources import NotArrow, arrow_source, write_arrow_source
from kdlang.runtime.data import DATA_FILE, load_source, read_rows, write_rows
from kdlang.runtime.stages._filter_batches import ExactDedup, MinHashDedup
from kdlang.runtime.stages.filter import dedup_exact, dedup_minhash
from kdlang.runtime.stages.select import top, top_values

from kdlang.ir import selection as sel
from kdlang.lower import lower
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.parser import parse
from kdlang.syntax.span import Span
from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(60)

MIXED = [
    {
        "s": "a" * (i % 5) if i % 3 else None,
        "i": i if i % 4 else None,
        "b": i % 2 == 0,
        "l": [i, i + 1] if i % 5 else [],
        "m": {"x": i, "y": str(i)},
        "u": "ünï" * (i % 3),
    }
    for i in range(40)
]


def bytes_of(folder: Path) -> bytes:
    return (folder / DATA_FILE).read_bytes()


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(arrow_io, "BATCH_ROWS", 7)


@pytest.mark.parametrize("cuts", [[40], [1, 39], [7, 7, 26], [3, 3, 3, 31], [13, 0, 27]])
def test_an_artifact_does_not_depend_on_how_its_rows_were_cut(tmp_path, small_batches, cuts):
    write_rows(MIXED, tmp_path / "whole")
    table = pa.Table.from_pylist(MIXED)
    writer = ArrowWriter(tmp_path / "cut")
    start = 0
    for size in cuts:
        writer.write(table.slice(start, size))
        start += size
    assert writer.close() == 40
    assert bytes_of(tmp_path / "cut") == bytes_of(tmp_path / "whole")
    assert [b.num_rows for b in read_batches(tmp_path / "cut")] == [7] * 5 + [5]
    assert read_rows(tmp_path / "cut") == table.to_pylist()


def test_batches_of_other_types_are_written_as_the_rows_together_convert(tmp_path, small_batches):
    rows = [{"a": None, "n": 1}] * 8 + [{"a": "text", "n": 2.5}] * 3 + [{"a": None, "n": None}]
    writer = ArrowWriter(tmp_path / "parts", columns=["n", "a"])
    for start in range(0, len(rows), 4):  # a null column first, text later; ints, then floats
        writer.write_rows(rows[start : start + 4])
    writer.close()
    write_rows(rows, tmp_path / "whole", columns=["n", "a"])
    assert bytes_of(tmp_path / "parts") == bytes_of(tmp_path / "whole")
    schema = next(read_batches(tmp_path / "parts")).schema
    assert schema.names == ["n", "a"] and schema.field("a").type == pa.string()
    assert schema.field("n").type == pa.float64()
    assert not list((tmp_path / "parts").glob(".segment*"))  # only data.arrow is left


def test_a_column_of_two_kinds_is_an_error_naming_it(tmp_path):
    writer = ArrowWriter(tmp_path)
    writer.write_rows([{"x": 1}])
    writer.write_rows([{"x": "one"}])
    with pytest.raises(MixedColumn, match="column `x` holds int64 and string"):
        writer.close()


def test_no_rows_keep_the_named_columns(tmp_path):
    writer = ArrowWriter(tmp_path, ["a", "b"])
    writer.write(pa.table({"a": pa.array([], pa.int64())}))
    assert writer.close() == 0
    write_rows([], tmp_path / "old", ["a", "b"])
    assert bytes_of(tmp_path) == bytes_of(tmp_path / "old")


# -- sources ----------------------------------------------------------------------------


def declared(text: str):
    errors = Collector()
    recipe = lower(parse(f"dataset d = {text}\n", "t.kd"), errors)
    assert errors.diagnostics == []
    return recipe.datasets["d"]


JSONL = [
    {"q": "one", "n": 1, "meta": {"k": "v"}, "tags": ["a", "b"]},
    {"n": 2.5, "q": "twö", "extra": True},
    {"q": None, "n": 3, "meta": {"k": "w", "j": 1}, "tags": []},
] + [{"q": f"row {i}", "n": i, "tags": [str(i)]} for i in range(30)]


@pytest.mark.parametrize("settings", ["", ", limit = 5", ", columns = [n, q]"])
def test_jsonl_read_by_pyarrow_gives_the_python_rows_bytes(tmp_path, small_batches, settings):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in JSONL) + "\n\n", encoding="utf-8")
    data = declared(f'jsonl("d.jsonl"{settings})')
    columns = list(data.columns) if data.columns else None
    arrow = ArrowWriter(tmp_path / "arrow", columns)
    write_arrow_source(arrow_source(data, path), data, 11, arrow)
    arrow.close()
    write_rows(load_source(data, tmp_path, 11), tmp_path / "python", columns)
    assert bytes_of(tmp_path / "arrow") == bytes_of(tmp_path / "python")


@pytest.mark.parametrize("settings", [", shuffle = true", ", shuffle = true, limit = 7"])
def test_a_shuffled_jsonl_holds_the_python_rows_in_the_python_order(tmp_path, settings):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in JSONL) + "\n", encoding="utf-8")
    data = declared(f'jsonl("d.jsonl"{settings})')
    arrow = ArrowWriter(tmp_path / "arrow")
    write_arrow_source(arrow_source(data, path), data, 11, arrow)
    arrow.close()
    expected = load_source(data, tmp_path, 11)
    order = list(range(len(JSONL)))
    random.Random(11).shuffle(order)
    assert [r["n"] for r in expected] == [JSONL[i]["n"] for i in order][: len(expected)]
    got = read_rows(tmp_path / "arrow")
    names = ["q", "n", "meta", "tags", "extra"]  # as they first come in the file
    assert [list(r) for r in got] == [names] * len(expected)
    assert [{k: v for k, v in r.items() if v is not None} for r in got] == [
        {k: v for k, v in _as_written(r).items() if v is not None} for r in expected
    ]


def _as_written(row: dict) -> dict:
    """A row as a map column gives it back: every field of every row's map."""
    if isinstance(row.get("meta"), dict):
        row = {**row, "meta": {"k": row["meta"].get("k"), "j": row["meta"].get("j")}}
    return row


def test_parquet_read_in_batches_gives_the_python_rows_bytes(tmp_path, small_batches):
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "x": pa.array(range(20), pa.int32()),
            "s": pa.array([str(i) for i in range(20)], pa.large_string()),
        }
    )
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=6)
    data = declared('parquet("d.parquet", limit = 15)')
    arrow = ArrowWriter(tmp_path / "arrow")
    write_arrow_source(arrow_source(data, tmp_path / "d.parquet"), data, 0, arrow)
    arrow.close()
    write_rows(load_source(data, tmp_path, 0), tmp_path / "python")
    assert bytes_of(tmp_path / "arrow") == bytes_of(tmp_path / "python")


@pytest.mark.parametrize(
    "lines",
    [
        ['{"when": "2024-01-02"}'],  # pyarrow would read a timestamp
        ['{"turns": [{"role": "user", "content": "hi"}]}'],  # perhaps a conversation
        ['{"x": 1}', "[1, 2]"],  # no object
        ['{"x": 1}', '{"x": "one"}'],  # two types: the Python reader names the row
    ],
)
def test_what_pyarrow_would_read_otherwise_is_read_the_python_way(tmp_path, lines):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = declared('jsonl("d.jsonl")')
    with pytest.raises(NotArrow):
        write_arrow_source(arrow_source(data, path), data, 0, ArrowWriter(tmp_path / "out"))
    assert arrow_source(declared('jsonl("d.jsonl", columns = {x: int})'), path) is None


# -- dedup over batches ---------------------------------------------------------------------

SPAN = Span("t.kd", 1, 1, 1, 2)
TEXTS = [
    "the same text",
    "the  same\ttext",
    " the same text\n",
    "The same text",
    None,
    "None",
    "a\u00a0b",
    "a b",
    "a\u200bb",
    "",
    "   ",
    "x\x1cy",
    "x y",
    "ünï",
    "ünï ",
]


@pytest.mark.parametrize("size", [1, 4, 100])
def test_exact_dedup_over_batches_keeps_the_first_of_each_text(size):
    table = pa.Table.from_pylist([{"t": t, "i": i} for i, t in enumerate(TEXTS)])
    dedup = ExactDedup("t")
    kept = []
    for batch in table.to_batches(max_chunksize=size):
        kept += dedup(batch).column("i").to_pylist()
    reference = [r["i"] for r in dedup_exact(table.to_pylist(), "t")]
    assert kept == reference == [0, 3, 4, 6, 8, 9, 11, 13]


def near_duplicates(seed: int) -> list[str | None]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(40)]
    texts: list[str | None] = []
    for _ in range(250):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 30))]
        texts.append(" ".join(words))
        if words and rng.random() < 0.6:
            words[rng.randrange(len(words))] = "changed"
            texts.append(" ".join(words))
    return [*texts, None, "", "Ünï ß"]


@pytest.mark.parametrize(
    ("threshold", "ngram", "num_perm"), [(0.9, 5, 128), (0.5, 2, 64), (0.99, 3, 128), (0.7, 1, 32)]
)
def test_minhash_over_batches_keeps_what_datasketch_keeps(threshold, ngram, num_perm):
    from datasketch import MinHash

    texts = near_duplicates(3)
    rule = sel.DedupRule(
        column="t", method="minhash", threshold=threshold, ngram=ngram, num_perm=num_perm, span=SPAN
    )
    dedup = MinHashDedup(rule, seed=5)
    signatures = dedup.signatures_of(texts[:40])
    for text, signature in zip(texts[:40], signatures, strict=True):
        words = re.findall(r"\w+", (text or "").lower())
        grams = {" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}
        reference = MinHash(num_perm=num_perm, seed=5)
        for gram in grams or {" ".join(words)}:
            reference.update(gram.encode("utf-8"))
        assert signature.tolist() == reference.hashvalues.tolist()
    table = pa.Table.from_pylist([{"t": t, "i": i} for i, t in enumerate(texts)])
    kept = []
    for batch in table.to_batches(max_chunksize=37):
        kept += dedup(batch).column("i").to_pylist()
    expected = [r["i"] for r in dedup_minhash(table.to_pylist(), rule, 5)]
    assert kept == expected
    assert len(expected) < len(texts)  # near-duplicates were found


def test_top_values_rank_arrow_columns_as_python_values():
    values = [3, None, 7.5, float("nan"), -1, 7.5, 0.0, -0.0, float("inf")]
    rows = [{"v": v} for v in values]
    for count in range(len(values) + 1):
        assert top_values(pa.array(values, pa.float64()), count) == top(rows, count, "v")
    texts = ["2", "x", None, "10", "2.0"]
    assert top_values(pa.array(texts), 3) == top([{"v": t} for t in texts], 3, "v") == [0, 3, 4]


# -- a pipeline of many batches -------------------------------------------------------------


def test_a_pipeline_of_many_batches_gives_the_rows_of_a_python_reference(tmp_path, small_batches):
    rng = random.Random(4)
    data = []
    for i in range(150):
        if data and rng.random() < 0.3:
            data.append(dict(rng.choice(data)))
        else:
            words = " ".join(rng.choice(["alpha", "beta", "Gamma", "délta"]) for _ in range(6))
            data.append(
                {"q": f"{words} {i % 17}", "a": rng.randint(0, 99), "note": None if i % 2 else "n"}
            )
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    recipe = write_recipe(
        folder,
        """
        dataset d = jsonl("d.jsonl")
        stage m = map(d) {
          text = q + "!"
          size = len(q) * 2
          pick = extract(q, r"(\\d+)$")
        }
        stage f = filter(m) {
          keep matches(text, r"^[a-z]") and size > 40
          dedup q by exact
        }
        stage s = select(f) { n = 10  by = a }
        """,
    )
    document = run_recipe(recipe)
    expected_map = [
        {
            **r,
            "text": r["q"] + "!",
            "size": len(r["q"]) * 2,
            "pick": re.search(r"(\d+)$", r["q"]).group(1),
        }
        for r in data
    ]
    assert rows(document, "m") == [
        {k: r.get(k) for k in ("q", "a", "note", "text", "size", "pick")} for r in expected_map
    ]
    seen, kept = set(), []
    for r in expected_map:
        if re.match(r"[a-z]", r["text"]) and r["size"] > 40 and r["q"] not in seen:
            seen.add(r["q"])
            kept.append(r)
    assert [r["q"] for r in rows(document, "f")] == [r["q"] for r in kept]
    ranked = sorted(range(len(kept)), key=lambda i: (-kept[i]["a"], i))[:10]
    assert [r["q"] for r in rows(document, "s")] == [kept[i]["q"] for i in sorted(ranked)]
    assert node(document, "f")["rows_out"] == len(kept)
    assert [b.num_rows for b in read_batches(Path(node(document, "m")["output"]))][:2] == [7, 7]


def test_explode_of_a_list_column_flattens_as_the_rows_would():
    from kdlang.runtime.stages.explode import exploded, exploded_batch

    from tests.expr.support import _lowered

    recipe = _lowered("stage e = explode(d) {\n  tags = tags\n}\n")
    stage = recipe.stages["e"]
    data = [
        {"q": "a", "tags": ["x", "y"]},
        {"q": "b", "tags": []},
        {"q": "c", "tags": None},
        {"q": "d", "tags": [None, "z"]},
    ]
    batch = pa.RecordBatch.from_pylist(data)
    fast = exploded_batch(batch, stage)
    assert fast is not None
    table, empty = fast
    reference, none = exploded(data, stage)
    assert (
        (table.to_pylist(), empty)
        == (reference, none)
        == (
            [
                {"q": "a", "tags": "x"},
                {"q": "a", "tags": "y"},
                {"q": "d", "tags": None},
                {"q": "d", "tags": "z"},
            ],
            2,
        )
    )
