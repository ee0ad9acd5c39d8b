"""Diagnostic codes KD04xx: files and command-line overrides."""

TABLE = [
    (
        "KD0401",
        "unknown override path",
        "A `--set path=value` names a setting that does not exist. Paths are `DECL.setting` "
        "(`distill.lr`), `recipe.setting` (`recipe.seed`), or `DECL.loss.NAME.weight`.",
    ),
    (
        "KD0402",
        "file not found",
        "An imported `.kd` file, a local data file or a local model folder does not exist (paths "
        "are relative to the recipe file). A model path is local when it cannot be a hub id: "
        "absolute, starting with `./`, `../` or `~`, or of three or more segments; `name` and "
        "`org/name` are hub ids unless such a folder exists beside the recipe.",
    ),
    (
        "KD0403",
        "unreadable data file",
        "A local data file could not be read to infer its columns (bad JSON line, empty file, "
        "unknown format). Fix the file or declare `columns = [...]`.",
    ),
    (
        "KD0404",
        "invalid override value",
        "The value of a `--set path=value` is not a valid expression of the language.",
    ),
    (
        "KD0405",
        "unsafe export path",
        "An `export` puts the student's folder in place of its destination, so the destination "
        "must be a folder of its own. Refused: an empty path or `.` (the working directory), the "
        "working directory under any other spelling (`a/..`, its absolute path), the cache "
        "folder (`.kdcache`) or a folder inside it, and any folder above the working directory "
        "or the cache (`..`, `/`). Export paths are relative to the working directory "
        "(`--workdir`, by default the current one); `check` judges them against the current "
        "directory and `run` again against the folders it uses. Write "
        '`export NAME to "exports/NAME"`.',
    ),
    (
        "KD0406",
        "environment variable not set",
        'A warning: the recipe reads a secret with `env("NAME")` and the variable is not set '
        "where `check` or `plan` ran (secrets are often set only where recipes run). `kdlang run` "
        "refuses to start, before its first stage, when a stage that will run needs it; stages "
        "already cached need no secret. Set it (`export NAME=...`) before running.",
    ),
    (
        "KD0407",
        "not a regular file",
        "An import or a local data file names a folder, a device (`/dev/zero`), a pipe or a "
        "socket, or a file kdlang may not read. Imports and data files must be regular files; "
        "kdlang looks (`stat`) before it opens them, so a pipe never blocks the check.",
    ),
    (
        "KD0408",
        "recipe file too large",
        "A recipe or imported file is larger than 4 MiB; a recipe is a short text. Move data "
        "into a data file (`jsonl(...)`) and prompts into smaller imports.",
    ),
    (
        "KD0409",
        "path too long",
        "A path in the recipe (an import, a data file, a model's folder or hub id) has a "
        "component longer than the operating system allows (usually 255 bytes), so no such "
        "file can exist. Shorten it.",
    ),
    (
        "KD0410",
        "import of a file that is not a recipe",
        "`import` reads `.kd` files only: the path must end in `.kd`. Other files (data, "
        "secrets, system files) are never read as recipes, so that no diagnostic shows their "
        "lines. Read data with `jsonl(...)`, `csv(...)` or `parquet(...)`.",
    ),
    (
        "KD0411",
        "file is not UTF-8",
        "A recipe or imported file must be UTF-8 text. The diagnostic points at the line and "
        "column of the first byte that is not; re-save the file as UTF-8.",
    ),
    (
        "KD0412",
        "data export to a path of no data format",
        '`export NAME to "PATH"` of a dataset or a stage writes its rows as one file, in the '
        "format the path's extension names: `.jsonl` (one JSON object per line), `.parquet` or "
        "`.csv` (lists and maps as JSON text). Give the path one of them.",
    ),
    (
        "KD0413",
        "model export setting on a data export",
        "`merge_lora` and `card` say how a trained model is exported; an export of a dataset or "
        "a stage writes rows and takes neither. Remove the setting.",
    ),
    (
        "KD0414",
        "hub model not in the local cache",
        "A warning of `kdlang check --offline`: this hub id is not in the local Hugging Face "
        "cache (`HF_HOME`, `HF_HUB_CACHE`), so a run without the network (`HF_HUB_OFFLINE=1`) "
        "would stop at the stage that loads it. Download it where the hub can be reached "
        "(`hf download ORG/NAME`) or give a local folder. `check` never asks the network.",
    ),
]
