"""Lowering: the syntax tree of one file to its IR, with every error collected as a diagnostic.

Each declaration's settings (call keywords and block settings alike) become neutral values
(:mod:`kdlang.lower.settings`) and are validated by the declaration's pydantic model; pydantic's
errors are mapped back to the offending setting's span (:mod:`kdlang.ir.validation`). The lines
of a block that are no settings are lowered here: a train's ``loss`` lines, a filter's rules,
an eval's metrics, whose expressions are the expression language's
(:mod:`kdlang.expr.lower`).
"""

from __future__ import annotations

from collections.abc import Mapping

# The module, its functions read when called: kdlang.expr's modules import kdlang.ir.expr, whose
# package (kdlang/ir/__init__.py) imports this module, whichever of the two is imported first.
from kdlang.expr import lower as expressions
from kdlang.ir.descriptor import Operator
from kdlang.ir.losses import LOSSES, LossBase
from kdlang.ir.recipe import Import, Recipe
from kdlang.ir.sources import (
    DATASET_KINDS,
    DATASET_POSITIONAL,
    MODEL_KINDS,
    MODEL_POSITIONAL,
    Prompt,
    RecipeHeader,
)
from kdlang.ir.stages import STAGE_OPERATORS, StageOperator
from kdlang.ir.training import Evaluate, Export, Metric, Train
from kdlang.ir.transforms import Computing
from kdlang.ir.validation import Fields, Unlowerable
from kdlang.ir.values import Node, Ref
from kdlang.lower.stage_parts import FILTER_STMTS, StagePartsLowering
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, suggestion
from kdlang.syntax.span import Span


def lower(module: ast.Module, errors: Collector) -> Recipe:
    """The IR of ``module``. Errors go to ``errors``; declarations with errors are left out."""
    recipe = Recipe.empty(file=module.file)
    lowering = _Lowering(errors)
    for decl in module.decls:
        try:
            lowering.declaration(recipe, decl)
        except Unlowerable:
            continue
    return recipe


class _Lowering(StagePartsLowering):
    """Declarations, and the lines of their blocks that are no settings."""

    def declaration(self, recipe: Recipe, decl: ast.Decl) -> None:
        if isinstance(decl, ast.RecipeDecl):
            if recipe.header is not None:
                self.errors.error(
                    "KD0111",
                    "a second `recipe` header",
                    Span(
                        decl.span.file,
                        decl.span.line,
                        decl.span.column,
                        decl.title.span.end_line,
                        decl.title.span.end_column,
                    ),
                    notes=[("the first is here", recipe.header.span)],
                )
                return
            fields = self.fields(decl.block)
            fields.add("title", decl.title.value, decl.title.span)
            recipe.header = self.validated(RecipeHeader, fields, decl.span, decl.block.span)
            return
        if isinstance(decl, ast.ImportDecl):
            recipe.imports.append(Import(path=decl.path.value, span=decl.path.span))
            return
        if isinstance(decl, ast.ExportDecl):
            fields = self.fields(decl.block)
            self.given(
                Export, fields, "train", Ref(name=decl.name, span=decl.name_span), decl.name_span
            )
            self.given(Export, fields, "path", self.value(decl.path), decl.path.span, decl.path)
            export = self.validated(Export, fields, decl.span, decl.name_span)
            if export is not None:
                recipe.exports.append(export)
            return
        assert isinstance(decl, ast.NamedDecl)
        node, section = self.named(decl)
        if node is None:
            recipe.broken.setdefault(decl.name, section)
            recipe.name_spans.setdefault(decl.name, decl.name_span)
            return
        if decl.name in recipe.name_spans and decl.name not in recipe.broken:
            self.errors.error(
                "KD0202",
                f"`{decl.name}` is declared twice",
                decl.name_span,
                notes=[("first declared here", recipe.name_spans[decl.name])],
            )
            return
        recipe.broken.pop(decl.name, None)
        recipe.name_spans[decl.name] = decl.name_span
        getattr(recipe, section)[decl.name] = node

    def named(self, decl: ast.NamedDecl) -> tuple[Node | None, str]:
        if isinstance(decl, ast.ModelDecl):
            return self.constructed(
                decl, decl.value, None, MODEL_KINDS, MODEL_POSITIONAL, "model"
            ), "models"
        if isinstance(decl, ast.DatasetDecl):
            return self.constructed(
                decl, decl.value, decl.block, DATASET_KINDS, DATASET_POSITIONAL, "dataset"
            ), "datasets"
        if isinstance(decl, ast.PromptDecl):
            return self.prompt(decl), "prompts"
        if isinstance(decl, ast.StageDecl):
            return self.stage(decl), "stages"
        if isinstance(decl, ast.TrainDecl):
            return self.train(decl), "trains"
        if isinstance(decl, ast.EvalDecl):
            return self.evaluate(decl), "evals"
        raise AssertionError(type(decl))

    def constructed(
        self,
        decl: ast.NamedDecl,
        value: ast.Expr,
        block: ast.Block | None,
        kinds: Mapping[str, type[Node]],
        positional: Mapping[str, tuple[str, ...]],
        what: str,
    ) -> Node | None:
        if not isinstance(value, ast.Call):
            self.errors.error(
                "KD0107",
                f"a {what} is made by a call such as " + " or ".join(f"`{k}(...)`" for k in kinds),
                value.span,
            )
            return None
        if value.name not in kinds:
            self.errors.error(
                "KD0107",
                f"unknown {what} kind `{value.name}`",
                value.func.span,
                help=suggestion(value.name, kinds) or f"{what}s: " + ", ".join(kinds),
            )
            return None
        fields = self.fields(block, call=value, positional=positional[value.name])
        return self.validated(kinds[value.name], fields, decl.span, decl.name_span)

    def prompt(self, decl: ast.PromptDecl) -> Prompt | None:
        if not isinstance(decl.value, ast.String):
            self.errors.error(
                "KD0103", "a prompt is a string (usually triple-quoted)", decl.value.span
            )
            return None
        text = decl.value
        return Prompt(
            text=text.value,
            origin=text.content_start,
            raw=text.is_raw,
            span=decl.span,
            spans={"text": text.span},
        )

    def stage(self, decl: ast.StageDecl) -> StageOperator | None:
        op = decl.op
        cls = STAGE_OPERATORS.get(op.name)
        if cls is None:
            help_text = suggestion(op.name, STAGE_OPERATORS)
            if op.name == "evaluate":
                help_text = "`evaluate` makes an `eval` declaration: eval NAME = evaluate(model, data) { ... }"
            self.errors.error(
                "KD0101",
                f"unknown stage operator `{op.name}`",
                op.func.span,
                help=help_text or "operators: " + ", ".join(STAGE_OPERATORS),
            )
            return None
        block, computed = decl.block, None
        if issubclass(cls, Computing):
            block, computed = self.computed_columns(cls, decl.block)
        call, others = op, None
        if "others" in cls.syntax_fields:  # union(a, b, ...): the inputs after the first
            call, others = ast.Call(op.span, op.func, op.args[:1], op.kwargs), op.args[1:]
        fields = self.fields(
            block,
            call=call,
            positional=("input",),
            allow=FILTER_STMTS if op.name == "filter" else (),
        )
        if others is not None:
            self.union_inputs(decl, cls, fields, others)
        if computed is not None and issubclass(cls, Computing):
            self.computed_lines(decl, cls, fields, computed)
        if op.name == "filter":
            lines = (
                [s for s in decl.block.stmts if isinstance(s, FILTER_STMTS)] if decl.block else []
            )
            if not lines:
                self.errors.error(
                    "KD0105",
                    f"filter `{decl.name}` has no rule",
                    decl.name_span,
                    help="add `keep EXPR`, `dedup COLUMN by exact` or "
                    "`decontaminate COLUMN against DATASET` lines in its block",
                )
                fields.reported.add("rules")
            rules = self.rules(decl.block)
            if len(rules) != len(lines):
                fields.reported.add("rules")  # each failed rule is reported already
            self.given(cls, fields, "rules", rules, decl.block.span if decl.block else op.span)
        self.setting_problems(cls, fields, decl.name_span)
        return self.validated(cls, fields, decl.span, decl.name_span)

    def setting_problems(self, cls: type[Operator], fields: Fields, name_span: Span) -> None:
        """Report what the descriptor says is wrong with the combination of settings given."""
        for code, message, setting, *extra in cls.setting_problems(frozenset(fields.values)):
            at = fields.key_spans.get(setting, name_span) if setting else name_span
            self.errors.error(code, message, at, help=extra[0] if extra else None)
            fields.reported.add(setting or "")

    def train(self, decl: ast.TrainDecl) -> Train | None:
        fields = self.fields(decl.block, allow=(ast.LossStmt,))
        loss_lines = [s for s in decl.block.stmts if isinstance(s, ast.LossStmt)]
        if not loss_lines:
            self.errors.error(
                "KD0105",
                f"train `{decl.name}` has no `loss` line",
                decl.name_span,
                help="add e.g. `loss sft weight 1.0`",
            )
            fields.reported.add("losses")
        losses: list[LossBase] = []
        first_line: dict[str, Span] = {}
        for stmt in loss_lines:
            if stmt.name in first_line:
                # Terms are addressed by name (`--set distill.loss.sft.weight=...`).
                self.errors.error(
                    "KD0106",
                    f"loss `{stmt.name}` appears twice",
                    stmt.name_span,
                    notes=[("first given here", first_line[stmt.name])],
                    help="combine the two lines into one term with the summed weight",
                )
                fields.reported.add("losses")
                continue
            first_line[stmt.name] = stmt.name_span
            loss = self.loss(stmt)
            if loss is None:
                fields.reported.add("losses")  # reported already
            else:
                losses.append(loss)
        self.given(Train, fields, "losses", losses, decl.block.span)
        self.setting_problems(Train, fields, decl.name_span)
        return self.validated(Train, fields, decl.span, decl.name_span)

    def loss(self, stmt: ast.LossStmt) -> LossBase | None:
        cls = LOSSES.get(stmt.name)
        if cls is None:
            self.errors.error(
                "KD0108",
                f"unknown loss `{stmt.name}`",
                stmt.name_span,
                help=suggestion(stmt.name, LOSSES) or "losses: " + ", ".join(LOSSES),
            )
            return None
        fields = Fields()
        if stmt.args is not None:
            if stmt.args.args:
                self.errors.error(
                    "KD0112",
                    f"loss `{stmt.name}` takes keyword options only, e.g. `loss jsd(beta = 0.5)`",
                    stmt.args.args[0].span,
                )
                return None
            self.keywords(fields, stmt.args)
        fields.add("name", stmt.name, stmt.name_span)
        self.given(cls, fields, "weight", self.value(stmt.weight), stmt.weight.span, stmt.weight)
        if stmt.temperature is not None:
            if "temperature" in fields.values:
                self.errors.error("KD0106", "temperature given twice", stmt.temperature.span)
            fields.add(
                "temperature", self.value(stmt.temperature), stmt.temperature.span, stmt.temperature
            )
        return self.validated(cls, fields, stmt.span, stmt.name_span)

    def evaluate(self, decl: ast.EvalDecl) -> Evaluate | None:
        op = decl.op
        if op.name != "evaluate":
            self.errors.error(
                "KD0101",
                f"unknown eval operator `{op.name}`",
                op.func.span,
                help='did you mean "evaluate"?'
                if op.name in STAGE_OPERATORS or suggestion(op.name, ["evaluate"])
                else None,
            )
            return None
        fields = self.fields(
            decl.block, call=op, positional=("model", "data"), allow=(ast.MetricStmt,)
        )
        metrics: list[Metric] = []
        for stmt in decl.block.stmts if decl.block else []:
            if isinstance(stmt, ast.MetricStmt):
                name = stmt.name or expressions.metric_name(stmt.expr)
                metrics.append(Metric(name=name, expr=self.expression(stmt.expr), span=stmt.span))
        if not metrics:
            self.errors.error(
                "KD0105",
                f"eval `{decl.name}` has no `metric` line",
                decl.name_span,
                help="add e.g. `metric exact_match(output, answer)` in its block",
            )
            fields.reported.add("metrics")
        self.given(Evaluate, fields, "metrics", metrics, decl.block.span if decl.block else op.span)
        return self.validated(Evaluate, fields, decl.span, decl.name_span)
