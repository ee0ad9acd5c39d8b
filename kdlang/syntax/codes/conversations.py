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
        "top-k a `teacher_logits` stage cached over text targets, nor sampled on-policy "
        "(`on_policy`) yet. Learn a text column instead, or drop the setting.",
    ),
    (
        "KD0313",
        "a conversation for a model without chat template",
        "A conversation reaches a model only through its chat template: the student of a train "
        "whose target is a conversation, and an `hf` teacher answering one in `label`, must not "
        "set `chat_template = none`; an `openai` teacher answering one needs the chat endpoint "
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
        "KD0316",
        "chat template arguments not applied here",
        "`chat_template_args` reach the chat template where the model renders with kdlang's "
        "own rendering: a `train`'s student, and a teacher writing in `label`, `expand`, "
        "`curate` and `judge` stages. A `teacher_logits` stage and an `evaluate` do not pass "
        "them yet; a setting that would change nothing there is an error. Use a model without "
        "them (another declaration of the same path), or put the values in the template.",
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
