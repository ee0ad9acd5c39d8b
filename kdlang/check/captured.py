"""Checks of datasets that declare captured teacher logits (``logits = topk(...)``).

Before anything loads: the settings the layout reads (KD0332), the columns it needs and their
types (KD0330, KD0331), DistillKit's compression config (KD0333), and a declared vocabulary size
against the student's config (KD0334). What only the rows can tell (ids beyond the student's
vocabulary, the alignment of the teacher's tokens with the student's) is checked by the runtime
before the first step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlang.check.program import Program
from kdlang.ir import selection as sel
from kdlang.ir.captured import COLUMN_TYPES, LAYOUTS, ROLES, CapturedLogits
from kdlang.ir.sources import HFModel
from kdlang.syntax.diagnostics import Collector
from kdlang.syntax.source import kind_of

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
SPECIAL_TERMS = ("sqrt", "exp")


@dataclass(frozen=True)
class QuantBin:
    scale_dtype: str
    element_bits: int
    num_elements: int


@dataclass(frozen=True)
class CompressionConfig:
    """DistillKit's ``DistributionQuantizationConfig``, as its ``compression_config.yaml``
    holds it: ``k`` log-probs per position, sorted, the first ``exact_k`` stored as they are,
    the rest a polynomial in the rank (``polynomial_terms``) plus quantized residuals."""

    d: int
    k: int
    exact_k: int
    exact_dtype: str
    polynomial_terms: tuple[int | str, ...]
    term_dtype: str
    residual_bins: tuple[QuantBin, ...]
    delta_encoding: bool
    normalize_t: bool

    @property
    def index_bits(self) -> int:
        """Bits of one packed token id: ceil(log2(d))."""
        return max(1, (self.d - 1).bit_length())


def read_compression_config(path: Path) -> CompressionConfig:
    """The config at ``path``; ValueError (or OSError) says what is wrong with it."""
    import yaml  # type: ignore[import-untyped]  # pyyaml ships no stubs

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("it is not a map of settings")
    return compression_config(data)


def compression_config(data: dict[str, Any]) -> CompressionConfig:
    def integer(key: str, low: int, default: int | None = None) -> int:
        value = data.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{key}` must be an integer >= {low}")
        return value

    def dtype(value: Any, key: str) -> str:
        if value not in DTYPE_BYTES:
            raise ValueError(f"`{key}` must be one of {', '.join(DTYPE_BYTES)}")
        return value

    terms = data.get("polynomial_terms") or []
    if not isinstance(terms, list) or not all(
        (isinstance(t, int) and not isinstance(t, bool)) or t in SPECIAL_TERMS for t in terms
    ):
        raise ValueError("`polynomial_terms` must list integers (powers) or sqrt / exp")
    bins = []
    for entry in data.get("residual_bins") or []:
        if not isinstance(entry, dict):
            raise ValueError("each of `residual_bins` must be a map")
        bits, count = entry.get("element_bits"), entry.get("num_elements")
        if not (isinstance(bits, int) and 1 <= bits <= 64 and isinstance(count, int) and count):
            raise ValueError("a residual bin needs element_bits in 1..64 and num_elements >= 1")
        bins.append(QuantBin(dtype(entry.get("scale_dtype"), "scale_dtype"), bits, count))
    config = CompressionConfig(
        d=integer("d", 2),
        k=integer("k", 1),
        exact_k=integer("exact_k", 0),
        exact_dtype=dtype(data.get("exact_dtype", "float32"), "exact_dtype"),
        polynomial_terms=tuple(terms),
        term_dtype=dtype(data.get("term_dtype", "float32"), "term_dtype"),
        residual_bins=tuple(bins),
        delta_encoding=bool(data.get("delta_encoding", True)),
        normalize_t=bool(data.get("normalize_t", False)),
    )
    if config.exact_k > config.k:
        raise ValueError("`exact_k` must be <= `k`")
    if sum(b.num_elements for b in bins) > config.k - config.exact_k:
        raise ValueError("the residual bins hold more values than `k - exact_k`")
    return config


def captured_source(program: Program, data_name: str):
    """The dataset ``data_name`` reads from (through filters), when it declares ``logits``."""
    recipe = program.recipe
    while data_name in recipe.stages and isinstance(recipe.stages[data_name], sel.FilterStage):
        data_name = recipe.stages[data_name].input.name
    data = recipe.datasets.get(data_name)
    return data if isinstance(getattr(data, "logits", None), CapturedLogits) else None


def captured_spec(program: Program, data_name: str) -> CapturedLogits | None:
    """The ``logits`` declaration of the dataset ``data_name`` reads from (through filters)."""
    data = captured_source(program, data_name)
    return data.logits if data is not None else None


def check_captured(program: Program, errors: Collector) -> None:
    for name, data in program.recipe.datasets.items():
        spec = getattr(data, "logits", None)
        if isinstance(spec, CapturedLogits):
            _check_settings(spec, errors)
            _check_columns(spec, program.schemas.get(name), errors)
            if spec.layout == "distillkit":
                _check_config(program, spec, errors)
    for train in program.recipe.trains.values():
        data = captured_source(program, train.data.name)
        student = program.recipe.models.get(train.student.name)
        if data is not None and isinstance(student, HFModel):
            _check_vocab(program, data, student, train.student.name, errors)


def _check_settings(spec: CapturedLogits, errors: Collector) -> None:
    for role in (*ROLES, "config"):
        if role not in spec.model_fields_set or getattr(spec, role) is None:
            continue
        reads = role in LAYOUTS[spec.layout] if role != "config" else spec.layout == "distillkit"
        if not reads:
            errors.error(
                "KD0332",
                f"`{role}` has no meaning for the `{spec.layout}` layout",
                spec.spans.get(role, spec.span),
                help="remove it, or set the layout whose rows it describes",
            )


def _check_columns(spec: CapturedLogits, columns: dict | None, errors: Collector) -> None:
    if columns is None:
        return  # unknown here (a hub dataset): the runtime reads the rows
    for role, column in spec.columns().items():
        span = spec.spans.get(role, spec.span)
        kind = columns.get(column)
        if kind is None:
            errors.error(
                "KD0330",
                f"the `{spec.layout}` layout reads its {role} from the column `{column}`, which "
                "the data does not have",
                span,
                help=f"the data has: {', '.join(columns) or 'no columns'}; name the column "
                f"with `{role} = ...`",
            )
        elif kind != "any" and kind not in COLUMN_TYPES[spec.layout][role]:
            wanted = " or ".join(COLUMN_TYPES[spec.layout][role])
            errors.error(
                "KD0331",
                f"the column `{column}` ({role} of the `{spec.layout}` layout) holds {kind}, "
                f"not {wanted}",
                span,
            )


def _check_config(program: Program, spec: CapturedLogits, errors: Collector) -> None:
    if spec.config is None:
        errors.error(
            "KD0333",
            "the distillkit layout needs the compression config its logits were written with",
            spec.span,
            help='add `config = "compression_config.yaml"` (saved beside DistillKit\'s output)',
        )
        return
    path = program.resolve(spec.span.file, spec.config)
    span = spec.spans.get("config", spec.span)
    if kind_of(path) != "file":
        errors.error(
            "KD0333",
            f"compression config not found: {spec.config}",
            span,
            help=f"looked for {path} (paths are relative to the recipe file)",
        )
        return
    try:
        read_compression_config(path)
    except (OSError, ValueError, ImportError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        errors.error("KD0333", f"the compression config cannot be used: {message}", span)
    except Exception as error:  # yaml's parse errors
        errors.error("KD0333", f"the compression config is no YAML ({type(error).__name__})", span)


def _config_vocab_size(config: Path) -> int | None:
    """``vocab_size`` of a local model's config.json; None for a hub model or an unreadable
    config (loading the model will say why)."""
    if kind_of(config) != "file":
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        size = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
        return int(size) if size else None
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def largest_id(path: Path, column: str) -> int | None:
    """The largest value of ``column``'s leaves in a parquet file, from the statistics of its
    row groups (no row is read); None where a group has none."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        meta = pq.read_metadata(path)
        found = []
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                if chunk.path_in_schema.split(".")[0] == column:
                    stats = chunk.statistics
                    if stats is None or not stats.has_min_max:
                        return None
                    found.append(int(stats.max))
        return max(found) if found else None
    except Exception:  # pyarrow raises several types for bad files; the runtime checks the ids
        return None


def _check_tokenizer(
    program: Program, spec: CapturedLogits, student: HFModel, name: str, errors: Collector
) -> None:
    from kdlang.check.compat import vocab_digest_of

    assert spec.tokenizer is not None
    teacher = vocab_digest_of(program.resolve(spec.span.file, spec.tokenizer))
    own = vocab_digest_of(program.resolve(student.span.file, student.path))
    if teacher is not None and own is not None and teacher != own:
        errors.error(
            "KD0334",
            f"the tokenizer the captured logits name is not the student `{name}`'s",
            spec.spans.get("tokenizer", spec.span),
            notes=[("the student is declared here", student.span)],
            help="token-level losses need the teacher's and the student's vocabulary to be one",
        )


def _check_vocab(program: Program, data, student: HFModel, name: str, errors: Collector) -> None:
    spec: CapturedLogits = data.logits
    size = _config_vocab_size(program.resolve(student.span.file, student.path) / "config.json")
    if size is None:
        return  # a hub student: the runtime compares the ids and the tokenizers
    ids = spec.column("ids") if spec.layout in ("kdlang", "axolotl") else None
    path = program.resolve(data.span.file, data.path) if data.kind == "parquet" else None
    largest = largest_id(path, ids) if ids is not None and path is not None else None
    if largest is not None and largest >= size:
        errors.error(
            "KD0334",
            f"the captured token ids go up to {largest}, beyond the {size} ids of the student "
            f"`{name}`'s vocabulary",
            data.spans.get("logits", spec.span),
            notes=[("the student is declared here", student.span)],
            help="the logits were captured by a teacher with another vocabulary",
        )
    if spec.tokenizer is not None:
        _check_tokenizer(program, spec, student, name, errors)
    if spec.vocab_size is not None and size != spec.vocab_size:
        errors.error(
            "KD0334",
            f"the captured logits' vocabulary has {spec.vocab_size} ids, the student `{name}`'s "
            f"{size}",
            spec.spans.get("vocab_size", spec.span),
            notes=[("the student is declared here", student.span)],
            help="token-level losses need the teacher's and the student's vocabulary to be one",
        )
