"""IR of the recipe header and of the declarations that bring things in: models, datasets,
prompts."""

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from kdlang.ir.captured import CapturedLogits
from kdlang.ir.descriptor import Columns, Operator
from kdlang.ir.values import ColumnName, Node, SecretStr, StrOrEnv, Symbol

PositiveInt = Annotated[int, Field(ge=1)]
ColumnType = Annotated[
    Literal["str", "int", "float", "bool", "list", "map", "messages", "any"], Symbol
]
"""A declared column type: `columns = {conversation: messages, id: int}`."""
Role = Annotated[Literal["system", "user", "assistant", "tool"], Symbol]
"""The role of a conversation turn."""


class RecipeHeader(Node):
    """``recipe "name" { ... }``: settings that apply to the whole recipe."""

    kind: Literal["recipe"] = "recipe"
    title: str
    seed: int = Field(
        0, ge=0, description="Seed of every random choice (sampling, shuffling, init)."
    )
    description: str | None = Field(None, description="One line shown in reports and model cards.")


class LoRA(Node):
    """``lora(r = 8, alpha = 16, dropout = 0.05, target_modules = [...])``: train adapters via peft."""

    kind: Literal["lora"] = "lora"
    r: int = Field(8, ge=1, description="Adapter rank.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Annotated[Literal["all_linear"], Symbol] | None = Field(
        None,
        description="Module names to adapt, or `all_linear` (every linear layer but the output "
        "head); default: peft's choice for the architecture.",
    )
    dora: bool = Field(
        False,
        description="DoRA: each adapted weight learns a magnitude and a LoRA direction (peft's "
        "use_dora); merged into the weights like LoRA.",
    )
    modules_to_save: list[Annotated[str, Symbol]] | None = Field(
        None,
        description="Modules trained in full beside the adapters and saved with them "
        "(`[lm_head]`, `[embed_tokens]`).",
    )
    merge: bool = Field(
        True,
        description="On export, merge the adapters into the weights (else save the adapter alone).",
    )


class HFModel(Node):
    """``hf("path-or-hub-id", ...)``: a transformers causal LM. White-box: logits available."""

    kind: Literal["hf"] = "hf"
    path: str = Field(description="Local folder (relative to the recipe) or hub id.")
    revision: str | None = Field(
        None, description="Hub revision (commit, tag, branch); pinned in fingerprints."
    )
    dtype: Annotated[Literal["auto", "float32", "bfloat16", "float16"], Symbol] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on CUDA, float32 on CPU."
    )
    device: Annotated[Literal["auto", "cpu", "cuda"], Symbol] = Field(
        "auto", description="Where the model runs."
    )
    batch_size: int = Field(
        16, ge=1, description="Sequences per forward pass when generating or scoring."
    )
    decode_slots: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Sequences the CUDA decode engine keeps in flight, and the rows a stage sends "
        "this teacher per call (default: batch_size rows; slots sized from free memory). Fixes "
        "the slot count; off CUDA only the rows per call.",
    )
    lora: LoRA | None = Field(
        None, description="Train LoRA adapters instead of all weights (students)."
    )
    trust_remote_code: bool = Field(False, description="Allow the model's own code from the hub.")
    attention: Annotated[
        Literal[
            "auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"
        ],
        Symbol,
    ] = Field(
        "auto",
        description="The attention kernel transformers runs (`attn_implementation`; auto: its "
        "default, sdpa where supported). flash_attention_2/3 and flex_attention run packed rows "
        "as separate sequences, so a train's `packing = auto` packs with them.",
    )
    chat_template: Annotated[Literal["auto", "none"], Symbol] | str = Field(
        "auto",
        description="auto: apply the tokenizer's chat template when it has one; none: plain text; "
        'a Jinja template of its own, inline (`"""{% for m in messages %}..."""`) or the path of '
        "a file (relative to the recipe).",
    )
    chat_template_args: dict[str, Any] | None = Field(
        None,
        description="Keyword arguments of the chat template (`{enable_thinking: false}`), passed "
        "to `apply_chat_template` wherever the model renders a conversation.",
    )

    def inline_template(self) -> bool:
        """Whether ``chat_template`` is a template's text (else ``auto``, ``none`` or a file)."""
        return "{{" in self.chat_template or "{%" in self.chat_template

    def template_file(self) -> str | None:
        """The path ``chat_template`` names, when it names a file."""
        if self.chat_template in ("auto", "none") or self.inline_template():
            return None
        return self.chat_template


class OpenAIModel(Node):
    """``openai("model-name", base_url = ..., api_key = env("KEY"))``: any OpenAI-compatible server.

    Black-box: text, and top-k log-probs where the server returns them.
    """

    kind: Literal["openai"] = "openai"
    model: str = Field(description="Model name as the server knows it.")
    base_url: StrOrEnv | Annotated[list[StrOrEnv], Field(min_length=1)] | None = Field(
        None,
        description="Server URL (vLLM, TGI, llama.cpp, Ollama, a hosted API); default: the client's. "
        "A list names replicas of one model: each request goes to the least-loaded live one, and "
        "fails over to another when one fails.",
    )
    api_key: SecretStr | None = Field(
        None,
        description='Secret key, only as env("NAME"): never stored, logged or hashed by value.',
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once (per server).")
    timeout: float = Field(
        60.0, gt=0, description="Seconds before a request is abandoned and retried."
    )
    max_retries: int = Field(
        6,
        ge=0,
        description="Retries of a failed request (429 honours Retry-After; 5xx, timeouts, malformed bodies back off).",
    )
    chat: bool = Field(True, description="Use the chat-completions endpoint (else completions).")
    logprobs_top_k: int = Field(
        20,
        ge=0,
        description="Largest top-k log-probs the server returns (OpenAI and vLLM: 20); 0 = none.",
    )
    max_tokens_param: Annotated[Literal["max_tokens", "max_completion_tokens"], Symbol] = Field(
        "max_tokens",
        description="Request field of the token limit: max_completion_tokens for servers that reject max_tokens.",
    )
    backoff_base: float = Field(
        0.5, gt=0, description="Seconds of the first retry's backoff (doubled per attempt)."
    )
    backoff_max: float = Field(30.0, gt=0, description="Longest backoff before a retry, seconds.")


MODEL_KINDS: dict[str, type[Node]] = {"hf": HFModel, "openai": OpenAIModel}
MODEL_POSITIONAL = {"hf": ("path",), "openai": ("model",)}

Model = Annotated[HFModel | OpenAIModel, Field(discriminator="kind")]


FILE_PATH = "Local file, relative to the recipe file."


class DataCommon(Operator):
    """Base of the dataset sources: each is the ``dataset`` operator of the plan (its rows read,
    limited and shuffled), on one process when there are several."""

    operator: ClassVar[str] = "dataset"
    section: ClassVar[str] = "datasets"
    main_only: ClassVar[bool] = True

    columns: list[ColumnName] | dict[ColumnName, ColumnType] | None = Field(
        None,
        description="Columns of the data (a list, or a map to their types such as `messages`); "
        "read from local files when omitted.",
    )
    limit: PositiveInt | None = Field(
        None, description="Keep only the first N rows (after shuffling)."
    )
    shuffle: bool = Field(False, description="Shuffle rows with the recipe seed.")
    messages: ColumnName | None = Field(
        None,
        description="A column holding conversations in another layout (ShareGPT `from`/`value`, "
        "custom keys): read as `[{role, content}]`.",
    )
    role_key: str | None = Field(
        None, description="Key of a turn's role in `messages` (default: `role`, else `from`)."
    )
    content_key: str | None = Field(
        None, description="Key of a turn's text in `messages` (default: `content`, else `value`)."
    )
    roles: dict[str, Role] | None = Field(
        None,
        description="Role names of the data -> system/user/assistant/tool, added to "
        "human/gpt/bot/model (`roles = {asker: user, expert: assistant}`).",
    )
    logits: CapturedLogits | None = Field(
        None,
        description="The rows hold a teacher's captured top-k log-probs: `topk(layout = ..., "
        "temperature = ...)`; a train on the data needs no teacher for token-level losses.",
    )

    def typed_columns(self, columns: Columns | None) -> Columns | None:
        """The columns with the types this declaration gives: those of a `columns` map, and
        `messages` for the conversation column it names."""
        if columns is None:
            return None
        typed = dict(columns)
        if isinstance(self.columns, dict):
            typed.update({k: v for k, v in self.columns.items() if k in typed})
        if self.messages is not None and self.messages in typed:
            typed[self.messages] = "messages"
        return typed


class JsonlData(DataCommon):
    """``jsonl("path")``: one JSON object per line."""

    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(description=FILE_PATH)


class CsvData(DataCommon):
    """``csv("path")``: a header row, then rows."""

    kind: Literal["csv"] = "csv"
    path: str = Field(description=FILE_PATH)


class ParquetData(DataCommon):
    """``parquet("path")``."""

    kind: Literal["parquet"] = "parquet"
    path: str = Field(description=FILE_PATH)


class HFData(DataCommon):
    """``hf("id-or-local-path", split = "train", config = ...)`` through ``datasets.load_dataset``."""

    kind: Literal["hf"] = "hf"
    id: str = Field(description="Hub dataset id, or a local folder `datasets` can load.")
    split: str = Field("train", description="The split read.")
    config: str | None = Field(None, description="Configuration name, for datasets with several.")
    revision: str | None = Field(None, description="Hub revision (commit, tag, branch).")


class InlineData(DataCommon):
    """``inline([{question: "...", answer: "..."}, ...])``: rows written in the recipe."""

    kind: Literal["inline"] = "inline"
    rows: list[dict[str, Any]] = Field(
        min_length=1, description="The rows: maps from column name to value."
    )


DATASET_KINDS: dict[str, type[Node]] = {
    "jsonl": JsonlData,
    "csv": CsvData,
    "parquet": ParquetData,
    "hf": HFData,
    "inline": InlineData,
}
DATASET_POSITIONAL = {
    "jsonl": ("path",),
    "csv": ("path",),
    "parquet": ("path",),
    "hf": ("id",),
    "inline": ("rows",),
}

Dataset = Annotated[
    JsonlData | CsvData | ParquetData | HFData | InlineData, Field(discriminator="kind")
]


class Prompt(Node):
    """``prompt NAME = "..."`` (usually triple-quoted): a jinja2 template rendered per row,
    sandboxed, with undefined variables as errors."""

    kind: Literal["prompt"] = "prompt"
    text: str
    origin: tuple[int, int] = Field(
        (1, 1),
        exclude=True,
        description="(line, column) of the text's first character in its file.",
    )
    raw: bool = Field(
        True, exclude=True, description="Whether the literal was raw (positions map 1:1)."
    )
