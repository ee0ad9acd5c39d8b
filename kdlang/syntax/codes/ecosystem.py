"""Diagnostic codes KD0360-KD0369 and KD0415-KD0419 (trackers, hub, students as loaded, checkpoints kept)."""

TABLE: list[tuple[str, str, str]] = [
    (
        "KD0360",
        "tracker_project without a tracker that has projects",
        "`tracker_project` names the W&B project and the MLflow experiment a train is logged "
        "in, but the train reports to neither (`report_to` is `[tensorboard]` unless given). "
        'Add the tracker (`report_to = ["tensorboard", "wandb"]`) or remove `tracker_project`.',
    ),
    (
        "KD0361",
        "a tracker that is not installed",
        "`report_to` lists `wandb` or `mlflow`, and its package cannot be found where `kdlang "
        "check` runs (a warning: the recipe may run elsewhere). `kdlang run` stops at this train "
        'before loading anything. Install the trackers: `pip install "kdlang[trackers]"`.',
    ),
    (
        "KD0362",
        "init_from names no folder",
        "`init_from` is a folder the student's weights start from, relative to the recipe file: "
        "a checkpoint of another train (`ckpt-<step>`, holding weights.pt and state.pt), an "
        "exported model (config.json and weights) or a peft adapter (adapter_config.json). "
        "Nothing is there; fix the path.",
    ),
    (
        "KD0415",
        "not a hub repo id",
        'An export to `hub("owner/name")` names a Hugging Face Hub repo: an owner (a user or an '
        "organization) and a name, separated by one `/`, each made of letters, digits, `.`, "
        "`_` and `-` (at most 96 characters, not starting with `.`, `_` or `-`, without `..` "
        'or `--`). Write it as `hub("my-org/my-student")`.',
    ),
    (
        "KD0416",
        "hub() takes one string",
        '`hub(...)` takes exactly one argument, the repo id as a string: `hub("owner/name")`. '
        "Whether the repo is private, the branch committed to and the token are settings of "
        'the export\'s block: `export t to hub("owner/name") { private = true  revision = "main" '
        ' token = env("HF_TOKEN") }`.',
    ),
    (
        "KD0417",
        "a hub setting on an export to a path",
        "`private`, `revision` and `token` say how an export reaches the Hugging Face Hub; an "
        'export to a path writes a folder or a file and uses none of them. Export to `hub("owner/'
        'name")` for them to apply, or remove them.',
    ),
    (
        "KD0418",
        "card metadata on a data export to a file",
        "`license` and `tags` go into the metadata of a card (a model card, or the dataset card "
        "of rows exported to the hub). Rows exported to a file (`.jsonl`, `.parquet`, `.csv`) "
        'get no card. Export them to `hub("owner/name")` or remove the settings.',
    ),
]
