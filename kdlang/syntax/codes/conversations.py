"""Diagnostic codes of conversations: `messages` columns, chat templates, conversation teachers and assistant-only training."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0240",
        "no conversation column to read",
        "A conversation column is one a dataset names with `messages = COLUMN` (its turns in "
        "another layout: ShareGPT's `{from, value}`, custom keys) or declares with "
        "`columns = {COLUMN: messages}`. The column must be one of the data's columns and hold a "
        "list of turns per row (not text, numbers or maps); a CSV column may hold them as JSON "
        "text.",
    ),
    (
        "KD0241",
        "turn keys without a conversation column",
        "`role_key`, `content_key` and `roles` say how the turns of the conversation column named "
        "by `messages = COLUMN` are read; without `messages` they would change nothing. Name the "
        "column, or remove them (a column of `{role, content}` turns needs none).",
    ),
    (
        "KD0242",
        "text where a conversation is required",
        "A setting that works on the turns of a conversation names a column of text, numbers or "
        "lists: `train_on` needs the train's `target` to be a conversation column (type "
        "`messages`); `turns` needs the `label` stage's input column to be one. A text target is "
        "learned whole after its prompt: leave `train_on` out, or name a conversation column.",
    ),
    (
        "KD0243",
        "a conversation target this train cannot learn",
        "A `train` whose `target` is a conversation learns the tokens of its rendered chat "
        "template (the assistant's turns, as `train_on` says). The conversation brings its own "
        "user turns, so the train takes no `prompt`; a conversation cannot be learned from the "
        "top-k a `teacher_logits` stage cached over text targets (cache it with the "
        "conversation as the stage's `target`). Learn a text column instead, or drop the "
        "setting.",
    ),
    (
        "KD0245",
        "a conversation `teacher_logits` cannot score",
        "A `teacher_logits` stage whose `target` is a conversation scores the tokens of the "
        "teacher's rendered chat template (those `train_on` picks). The conversation brings its "
        "own user turns, so the stage takes no `prompt`; and the teacher is an `hf` model, "
        "whose tokens line up with the student's (an `openai` teacher scores text through the "
        "completions endpoint only). Remove the prompt, or score the conversation with an `hf` "
        "teacher.",
    ),
    (
        "KD0247",
        "an on-policy train with nothing to prompt the student",
        "A train with `on_policy = 1` samples every target from the student, so its rows need "
        "no target column; they still need what the student answers: a `prompt` rendered from "
        "each row, or a conversation `target`, whose turns up to the last user turn are the "
        "prompt (an assistant turn after it is not read).",
    ),
    (
        "KD0248",
        "an `evaluate` answering a conversation",
        "With `messages = COLUMN` an `evaluate` sends each row's conversation, up to its last "
        "user turn, to the model (its chat template renders it; an `openai` model gets the "
        "turns as chat messages) and `output` holds the answer; an assistant turn after that "
        "user turn is not sent, so a metric may compare with it (`last(COLUMN).content`). The "
        "evaluation then takes no `prompt`: give one of the two.",
    ),
    (
        "KD0249",
        "chat template arguments mixed where they cannot act",
        "A train's `chat_template_mix` renders each row with the arguments of one entry, picked "
        "from the seed and the row by the entries' shares (over the student's own "
        "`chat_template_args`). The student needs a chat template (not `chat_template = none`), "
        "and the teacher must read the same rendering: an online `teacher` does, a top-k cached "
        "by a `teacher_logits` stage was scored with the teacher's own arguments. Remove the "
        "mix, or name an online teacher.",
    ),
    (
        "KD0246",
        "a top-k cache that does not hold what the train learns",
        "A train learning from the top-k cached by a `teacher_logits` stage over a conversation "
        "learns the same column, as a conversation, and at most the tokens the stage scored: "
        "`last_assistant` is within `assistant`, which is within `all`. Name the stage's "
        "`target` in the train, or give the stage the train's `train_on`.",
    ),
    (
        "KD0313",
        "a conversation for a model without chat template",
        "A conversation reaches a model only through its chat template: the student of a train "
        "whose target is a conversation, an `hf` teacher answering or scoring one in `label` or "
        "`teacher_logits`, and a model an `evaluate` asks one of, must not set "
        "`chat_template = none`; an `openai` model answering one needs the chat endpoint "
        '(not `chat = false`). Give the model a template (`chat_template = "file.jinja"` or an '
        "inline one), or learn a text column.",
    ),
    (
        "KD0314",
        "chat template file not found",
        '`chat_template = "PATH"` names a Jinja file, relative to the recipe, that must exist '
        "and be readable UTF-8 text. Its text is read when the recipe is checked (runs are "
        "fingerprinted with it). A template written in the recipe is told apart by its `{{` "
        "or `{%`; `auto` keeps the tokenizer's own, `none` sends plain text.",
    ),
    (
        "KD0315",
        "chat template syntax error",
        "A model's chat template (inline or from its file) is no valid Jinja: an unclosed "
        "`{% for %}` or `{% if %}`, an unknown tag, a stray `}}`. It is parsed as transformers "
        "parses chat templates (with `loopcontrols` and the `{% generation %}` markers).",
    ),
    (
        "KD0244",
        "a `label` stage answering a conversation",
        "A `label` stage answers each row through its `prompt`, or answers the conversation of "
        "the column `messages = COLUMN` names: one of the two, not both (a prompt would go "
        "unused). `turns` says which assistant turns the teacher writes and `answer` names a "
        "text column for its last one: both need `messages`; "
        "`turns = each` writes every one in order, one generation each, so it takes "
        "`samples = 1`.",
    ),
]
