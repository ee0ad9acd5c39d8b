"""Parsing ``.kd`` text into the positioned syntax tree (:mod:`kdlang.syntax.ast`).

Syntax errors become :class:`~kdlang.syntax.diagnostics.Diagnostic` values (see
:mod:`kdlang.syntax.syntax_errors`); a ``VisitError`` raised inside the tree transformer is
unwrapped so that semantic errors found while building the tree keep their positions.
"""

from __future__ import annotations

from lark import Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedInput, UnexpectedToken, VisitError

from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, Diagnostic, DiagnosticError
from kdlang.syntax.grammar import comments_lexed
from kdlang.syntax.grammar import parser as lark_parser
from kdlang.syntax.span import Span
from kdlang.syntax.strings import decode_string

DECLARATION_KEYWORDS = frozenset(
    ["recipe", "import", "model", "dataset", "prompt", "stage", "train", "eval", "export"]
)
STATEMENT_KEYWORDS = frozenset(["loss", "keep", "dedup", "decontaminate", "metric"])
KEYWORDS = frozenset(
    [
        "recipe",
        "import",
        "model",
        "dataset",
        "prompt",
        "stage",
        "train",
        "eval",
        "export",
        "to",
        "loss",
        "weight",
        "temperature",
        "keep",
        "dedup",
        "by",
        "decontaminate",
        "against",
        "metric",
        "and",
        "or",
        "not",
        "in",
        "true",
        "false",
        "null",
    ]
)


def parse(source: str, file: str = "<string>") -> ast.Module:
    """Parse a whole file. Raises :class:`DiagnosticError` on any syntax error."""
    parser = lark_parser()

    def keyword_as_name(error: UnexpectedInput) -> bool:
        # LALR merges look-aheads, so the contextual lexer may offer a keyword where the parser,
        # once it has reduced, only accepts a name (`prompt = solve` inside a block). Re-read it.
        if not isinstance(error, UnexpectedToken):
            return False
        token = error.token
        if token.type == "NAME" or token.value not in KEYWORDS or "NAME" not in error.accepts:
            return False
        # A declaration keyword is a name only when a setting follows (`prompt = solve`); at the
        # start of a declaration it means a block above was left open, reported as such. A
        # statement keyword starting a line starts a statement: `weight` left without its value
        # before the next `loss` line is a missing value, not a reference to `loss`.
        rest = source[token.end_pos :].lstrip(" \t")
        sets = rest.startswith("=") and not rest.startswith("==")
        if token.value in DECLARATION_KEYWORDS and not sets:
            return False
        line_start = source.rfind("\n", 0, token.start_pos) + 1
        first_on_line = not source[line_start : token.start_pos].strip()
        if token.value in STATEMENT_KEYWORDS and first_on_line and not sets:
            return False
        error.interactive_parser.feed_token(Token.new_borrow_pos("NAME", token.value, token))
        return True

    try:
        with comments_lexed() as comment_tokens:
            tree = parser.parse(source, on_error=keyword_as_name)
    except UnexpectedInput as error:
        from kdlang.syntax.syntax_errors import syntax_diagnostic  # only files that do not parse

        raise DiagnosticError([syntax_diagnostic(error, source, file)]) from None
    comments = [ast.Comment(str(t).rstrip(), Span.of_token(file, t)) for t in comment_tokens]
    _check_nesting(tree, file)
    builder = _TreeBuilder(file)
    try:
        decls = builder.transform(tree)
    except VisitError as error:
        if isinstance(error.orig_exc, DiagnosticError):
            raise error.orig_exc from None
        raise
    builder.errors.raise_if_errors()
    return ast.Module(file=file, source=source, decls=decls, comments=comments)


_Numeric = int | float
MAX_DIGITS = 30
"""Digits of the longest integer literal (int64 needs 19)."""
MAX_NESTING = 100
"""How deep expressions, lists and maps may nest in a recipe (real ones nest under 15): every
phase after the parser walks the tree recursively, and this keeps them inside Python's stack."""


def _check_nesting(tree: Tree, file: str) -> None:
    """KD0011 at the first node nested deeper than :data:`MAX_NESTING` (walked without
    recursion, so that the check itself cannot overflow)."""
    stack: list[tuple[Tree, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise DiagnosticError(
                [
                    Diagnostic(
                        "KD0011",
                        f"nesting too deep: expressions, lists and maps nest at most "
                        f"{MAX_NESTING} levels",
                        _first_position(node, file),
                        help="name a part in its own declaration, or split the expression",
                    )
                ]
            )
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


def _first_position(node: Tree, file: str) -> Span:
    while True:
        if not node.meta.empty:
            m = node.meta
            return Span(file, m.line, m.column, m.end_line, m.end_column)
        first = next((c for c in node.children if isinstance(c, Tree | Token)), None)
        if isinstance(first, Token):
            return Span.of_token(file, first)
        if first is None:
            return Span(file, 1, 1, 1, 2)
        node = first


def parse_expression(source: str, file: str = "<expr>") -> ast.Expr:
    """Parse a single expression (used by ``--set path=value``)."""
    module = parse(f"prompt __value__ = {source}", file)
    decl = module.decls[0]
    assert isinstance(decl, ast.PromptDecl)
    return decl.value


@v_args(meta=True)
class _TreeBuilder(Transformer):
    def __init__(self, file: str):
        super().__init__(visit_tokens=False)
        self.file = file
        self.errors = Collector()

    def _span(self, meta) -> Span:
        return Span.of_meta(self.file, meta)

    def _tok(self, token: Token) -> Span:
        return Span.of_token(self.file, token)

    # -- declarations ------------------------------------------------------------------------

    def start(self, meta, children):
        return list(children)

    def recipe_decl(self, meta, c):
        return ast.RecipeDecl(self._span(meta), "recipe", self._string(c[0]), c[1])

    def import_decl(self, meta, c):
        return ast.ImportDecl(self._span(meta), "import", self._string(c[0]))

    def model_decl(self, meta, c):
        return ast.ModelDecl(self._span(meta), "model", str(c[0]), self._tok(c[0]), c[1])

    def dataset_decl(self, meta, c):
        return ast.DatasetDecl(self._span(meta), "dataset", str(c[0]), self._tok(c[0]), c[1], c[2])

    def prompt_decl(self, meta, c):
        return ast.PromptDecl(self._span(meta), "prompt", str(c[0]), self._tok(c[0]), c[1])

    def stage_decl(self, meta, c):
        return ast.StageDecl(self._span(meta), "stage", str(c[0]), self._tok(c[0]), c[1], c[2])

    def train_decl(self, meta, c):
        return ast.TrainDecl(self._span(meta), "train", str(c[0]), self._tok(c[0]), c[1])

    def eval_decl(self, meta, c):
        return ast.EvalDecl(self._span(meta), "eval", str(c[0]), self._tok(c[0]), c[1], c[2])

    def export_decl(self, meta, c):
        return ast.ExportDecl(self._span(meta), "export", str(c[0]), self._tok(c[0]), c[1], c[2])

    # -- statements --------------------------------------------------------------------------

    def block(self, meta, c):
        return ast.Block(self._span(meta), list(c))

    def setting(self, meta, c):
        return ast.Setting(self._span(meta), str(c[0]), self._tok(c[0]), c[1])

    def loss_stmt(self, meta, c):
        name, args, weight, temperature = c
        call = None
        if args is not None:
            positional, keywords, span = args
            func = ast.Ref(self._tok(name), (str(name),))
            call = ast.Call(self._tok(name).to(span), func, positional, keywords)
        return ast.LossStmt(self._span(meta), str(name), self._tok(name), call, weight, temperature)

    def loss_temperature(self, meta, c):
        return c[0]

    def keep_stmt(self, meta, c):
        return ast.KeepStmt(self._span(meta), c[0])

    def keep_setting(self, meta, c):
        key = Span(self.file, meta.line, meta.column, meta.line, meta.column + len("keep"))
        return ast.Setting(self._span(meta), "keep", key, c[0])

    def dedup_stmt(self, meta, c):
        return ast.DedupStmt(self._span(meta), str(c[0]), self._tok(c[0]), c[1])

    def decontaminate_stmt(self, meta, c):
        return ast.DecontaminateStmt(self._span(meta), str(c[0]), self._tok(c[0]), c[1], c[2])

    def metric_stmt(self, meta, c):
        name = c[0]
        return ast.MetricStmt(
            self._span(meta), str(name) if name else None, self._tok(name) if name else None, c[1]
        )

    # -- expressions -------------------------------------------------------------------------

    def or_op(self, meta, c):
        return ast.Binary(self._span(meta), "or", c[0], c[1])

    def and_op(self, meta, c):
        return ast.Binary(self._span(meta), "and", c[0], c[1])

    def not_op(self, meta, c):
        return ast.Unary(self._span(meta), "not", c[1])

    def compare(self, meta, c):
        return ast.Binary(self._span(meta), str(c[1]), c[0], c[2])

    def not_in(self, meta, c):
        return ast.Binary(self._span(meta), "not in", c[0], c[3])

    def range(self, meta, c):
        return ast.Range(self._span(meta), c[0], c[1])

    def binary(self, meta, c):
        return ast.Binary(self._span(meta), str(c[1]), c[0], c[2])

    def neg(self, meta, c):
        operand = c[1]
        if isinstance(operand, ast.Number | ast.Percent):
            # Fold `-3` into a literal so that values like `-1` stay literals in the IR.
            raw = "-" + operand.raw
            return type(operand)(self._span(meta), -operand.value, raw)
        return ast.Unary(self._span(meta), "-", operand)

    def call(self, meta, c):
        func, (positional, keywords, _span) = c
        return ast.Call(self._span(meta), func, positional, keywords)

    def call_args(self, meta, c):
        positional, keywords = [], []
        for arg in c:
            if arg is None:
                continue
            (keywords if isinstance(arg, ast.Keyword) else positional).append(arg)
        return positional, keywords, self._span(meta)

    def kwarg(self, meta, c):
        return ast.Keyword(str(c[0]), c[1], self._span(meta))

    def transition(self, meta, c):
        return ast.Transition(self._span(meta), c[0], c[1])

    def indexed(self, meta, c):
        return ast.Index(self._span(meta), c[0], c[1])

    def member(self, meta, c):
        return ast.Member(self._span(meta), c[0], str(c[1]), self._tok(c[1]))

    def dotted(self, meta, c):
        return ast.Ref(self._span(meta), tuple(str(t) for t in c))

    def ref(self, meta, c):
        return c[0]

    def list(self, meta, c):
        return ast.ListExpr(self._span(meta), [x for x in c if x is not None])

    def map(self, meta, c):
        return ast.MapExpr(self._span(meta), [x for x in c if x is not None])

    def map_entry(self, meta, c):
        key = c[0]
        value = self._string(key).value if key.type == "STRING" else str(key)
        return ast.MapEntry(value, str(key), c[1], self._span(meta))

    def string(self, meta, c):
        return self._string(c[0])

    def percent(self, meta, c):
        raw = str(c[0])
        return ast.Percent(self._span(meta), self._number(meta, raw[:-1], float) / 100.0, raw)

    def float(self, meta, c):
        return ast.Number(self._span(meta), self._number(meta, str(c[0]), float), str(c[0]))

    def int(self, meta, c):
        return ast.Number(self._span(meta), self._number(meta, str(c[0]), int), str(c[0]))

    def _number(self, meta, raw: str, kind: type) -> _Numeric:
        """The literal's value; KD0012 (and 0) for one no setting could take: an integer of
        more than :data:`MAX_DIGITS` digits, a float that overflows to infinity."""
        digits = len(raw.lstrip("+-").lstrip("0"))
        value = kind(raw) if kind is not int or digits <= MAX_DIGITS else None
        if value is None or value in (float("inf"), float("-inf")):
            shown = raw if len(raw) <= 24 else f"{raw[:12]}...{raw[-6:]} ({len(raw):,} characters)"
            self.errors.error(
                "KD0012",
                f"number too large: {shown}",
                self._span(meta),
                help="a count, size or rate of a recipe fits in far fewer digits",
            )
            return 0
        return value

    def true(self, meta, c):
        return ast.Bool(self._span(meta), True)

    def false(self, meta, c):
        return ast.Bool(self._span(meta), False)

    def null(self, meta, c):
        return ast.Null(self._span(meta))

    def _string(self, token: Token) -> ast.String:
        span = self._tok(token)
        value, is_raw, triple = decode_string(str(token), span, self.errors)
        return ast.String(span, value, str(token), is_raw, triple)
