"""IR of the stage operators that choose rows and shape preference data: ``pairs``, ``filter``
(with its ``keep``, ``dedup`` and ``decontaminate`` rules) and ``select``. Registered in
:data:`kdlang.ir.stages.STAGE_OPERATORS` by being defined (the recipe imports this module)."""

import itertools
import math
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from kdlang.ir.descriptor import DATA, Columns, Estimate, References
from kdlang.ir.expr import Expr
from kdlang.ir.stages import StageOperator
from kdlang.ir.values import ColumnName, Node, Percent, RefField


def _share(value: Percent) -> Percent:
    if not 0.0 < value.fraction <= 1.0:
        raise PydanticCustomError(
            "kd_range",
            "a share of the rows must be above 0% and at most 100%, got {got}%",
            {"got": f"{value.fraction * 100:g}"},
        )
    return value


def _ascending(edges: list[float]) -> list[float]:
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise PydanticCustomError("kd_range", "the edges of bins must ascend", {})
    return edges


class PairsStage(StageOperator):
    """``pairs(scored)``: preference pairs from several scored responses per prompt.

    Groups rows by ``group``; in each group the best-scored ``response`` becomes ``chosen`` and
    the worst ``rejected`` (ties and margins below ``min_margin`` give no pair). Output columns:
    the group column(s) kept as ``prompt`` context, ``chosen``, ``rejected``, ``margin``.
    """

    main_only = True
    column_settings = ("group", "response", "score")

    op: Literal["pairs"] = "pairs"
    group: ColumnName = Field(description="Column identifying the prompt the responses answer.")
    response: ColumnName = Field(description="Column holding a response.")
    score: ColumnName = Field("score", description="Column holding the response's score.")
    min_margin: float = Field(
        0.0, ge=0, description="Smallest score difference between chosen and rejected."
    )

    def output_columns(self, columns: Columns) -> Columns:
        return {
            self.group: columns.get(self.group, "any"),
            "chosen": "str",
            "rejected": "str",
            "margin": "float",
        }

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if rows is None:
            return Estimate(rows_upper_bound=upper)
        return Estimate(rows=rows // 2, rows_upper_bound=True)


class KeepRule(Node):
    """``keep EXPR``: rows where EXPR is true stay."""

    expressions: ClassVar[dict[str, str]] = {"condition": "bool"}

    rule: Literal["keep"] = "keep"
    condition: Expr


class DedupRule(Node):
    """``dedup COLUMN by exact`` or ``by minhash(threshold = 0.9, num_perm = 128, ngram = 5)``."""

    column_settings: ClassVar[tuple[str, ...]] = ("column",)

    rule: Literal["dedup"] = "dedup"
    column: ColumnName = Field(description="The column compared.")
    method: Literal["exact", "minhash"] = Field(
        "exact", description="exact: identical text; minhash: near-duplicates (MinHash LSH)."
    )
    threshold: float = Field(
        0.9, gt=0, le=1, description="minhash: Jaccard similarity from which rows are duplicates."
    )
    num_perm: int = Field(128, ge=16, description="minhash: permutations per signature.")
    ngram: int = Field(5, ge=1, description="minhash: words per shingle.")


class DecontaminateRule(Node):
    """``decontaminate COLUMN against DATASET [by ngram(n = 13)]``: drops rows sharing an n-gram
    of words with the same column of another dataset (typically the held-out set)."""

    references: ClassVar[References] = {"against": DATA}
    column_settings: ClassVar[tuple[str, ...]] = ("column",)
    against_columns: ClassVar[dict[str, str]] = {"column": "against"}
    """Settings naming a column that the data another setting names must have too."""

    rule: Literal["decontaminate"] = "decontaminate"
    column: ColumnName = Field(description="The column compared.")
    against: RefField = Field(description="The dataset no row may overlap with.")
    ngram: int = Field(13, ge=1, description="Words per n-gram, written `by ngram(n = 13)`.")


FilterRule = Annotated[KeepRule | DedupRule | DecontaminateRule, Field(discriminator="rule")]


class FilterStage(StageOperator):
    """``filter(input) { keep ... dedup ... decontaminate ... }``: rules applied in order."""

    syntax_fields: ClassVar[dict[str, str]] = {
        "rules": "its `keep`, `dedup` and `decontaminate` lines"
    }

    main_only = True

    op: Literal["filter"] = "filter"
    rules: list[FilterRule] = Field(min_length=1)

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        return Estimate(rows=rows, rows_upper_bound=upper or rows is not None)


class SelectStage(StageOperator):
    """``select(input) { n = 70%  by = score }``: a subset of the rows, in their input order.

    With ``by``, the ``n`` rows of highest ``by`` (a numeric column; ties keep the earlier row,
    rows without a number come last); without it, ``n`` rows drawn uniformly at random with the
    recipe's seed. A percentage keeps that share of the input, rounded up.

    With ``stratify = COLUMN``, the rows are first divided into strata, one per value of the
    column, or with ``bins = [e0, e1, ...]`` one per bin of a numeric column (bin i holds
    ``e_i <= v < e_i+1``, the last one its upper edge too; rows outside every bin, or without a
    value, are left out), and ``per_bin`` rows are kept from each stratum the same way (the top
    by ``by``, else a seeded sample; a percentage is a share of the stratum): EasyDistill's
    difficulty bins, DEITA's per-domain quotas.
    """

    main_only = True
    numeric_column_settings = ("by",)
    column_settings = ("stratify",)

    op: Literal["select"] = "select"
    n: Annotated[Percent, AfterValidator(_share)] | Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="Rows kept: a count, or a percentage of the input (`70%`); with "
        "`stratify`, `per_bin` says it per stratum instead.",
    )
    by: ColumnName | None = Field(
        None,
        description="Numeric column ranking the rows (highest kept); omitted: a random sample.",
    )
    stratify: ColumnName | None = Field(
        None,
        description="Column dividing the rows into strata (one per value, or per bin with "
        "`bins`); `per_bin` rows are kept from each.",
    )
    bins: Annotated[list[float], AfterValidator(_ascending)] | None = Field(
        None,
        min_length=2,
        description="Ascending edges of the strata of a numeric `stratify` column: bin i holds "
        "e_i <= v < e_i+1 (the last bin also its upper edge); rows outside every bin are left out.",
    )
    per_bin: Annotated[Percent, AfterValidator(_share)] | Annotated[int, Field(ge=1)] | None = (
        Field(
            None,
            description="Rows kept from each stratum of `stratify`: a count, or a share of the "
            "stratum.",
        )
    )

    def kept(self, rows: int, share: Any = None) -> int:
        """How many of ``rows`` rows the stage keeps (of a stratum, by ``share = per_bin``)."""
        amount = self.n if share is None else share
        if isinstance(amount, Percent):
            return min(rows, math.ceil(amount.fraction * rows - 1e-9))
        return min(rows, amount or 0)

    def estimate(self, rows: int | None, upper: bool, vocab: int | None = None) -> Estimate:
        if self.stratify is not None:  # depends on the values: at most the input
            return Estimate(rows=rows, rows_upper_bound=True)
        return Estimate(rows=None if rows is None else self.kept(rows), rows_upper_bound=upper)

    @classmethod
    def setting_problems(cls, given: frozenset[str]) -> list[tuple]:
        if "stratify" not in given:
            found: list[tuple] = [
                (
                    "KD0235",
                    f"`{setting}` says how strata are kept, but this `select` has no "
                    "`stratify = COLUMN`",
                    setting,
                )
                for setting in ("per_bin", "bins")
                if setting in given
            ]
            if "n" not in given:
                found.append(
                    ("KD0105", "`select` needs `n` (a count, or a share: `n = 30%`)", None)
                )
            return found
        if "n" in given:
            return [
                (
                    "KD0235",
                    "with `stratify`, say how many rows each stratum keeps with `per_bin`, not `n`",
                    "n",
                )
            ]
        if "per_bin" not in given:
            return [("KD0105", "a stratified `select` needs `per_bin`", "stratify")]
        return []

    def typed_output(self, columns: Columns, typing: Any) -> Columns:
        """The input's columns; ``bins`` checked against the ``stratify`` column's type."""
        kind = columns.get(self.stratify) if self.stratify else None
        if self.bins is not None and kind is not None and kind not in ("int", "float", "any"):
            typing.error(
                "KD0235",
                f"`bins` divide numbers, but `{self.stratify}` holds {kind}",
                self.spans.get("bins", self.span),
                help="leave `bins` out to keep rows per value of the column",
            )
        return dict(columns)
