"""``export NAME to hub("owner/name") { private = ..  revision = ..  token = env("HF_TOKEN") }``:
the trained student, or the rows of a dataset or stage, committed to a Hugging Face Hub repo.

Through ``huggingface_hub``: the repo is created when missing (``create_repo``, ``exist_ok``;
a model repo for a train, a dataset repo for rows; ``private`` is used only when it is
created), the branch ``revision`` is created from ``main`` when missing, and one commit
(``upload_folder``) adds the files:

- a train: the folder a path export would hold (the weights as ``save_pretrained`` wrote them,
  LoRA merged in unless ``merge_lora = false``, the tokenizer) and the model card ``README.md``
  whose metadata the hub reads (:mod:`kdlang.runtime.train.card`);
- rows: ``data/train.parquet`` (the artifact's table) and a dataset card ``README.md``.

``HF_ENDPOINT`` points the upload at another hub. The token is ``token``'s variable, else
``huggingface_hub``'s own (``HF_TOKEN``, ``hf auth login``); it is sent, never printed: an
error message that would hold it has it replaced. The artifact records what was committed
(:data:`RECORD`). A cached hub export is not uploaded again (the hub keeps its commits);
``--force`` commits again.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..cache import file_hashes
from ..context import StageContext, secret
from ..errors import RunError
from ..train.card import model_card
from ..train.hub_card import dataset_card
from . import _export_data as export_data

RECORD = "hub.json"
"""In the artifact: ``{"repo", "repo_type", "revision", "commit", "url", "files": {path: sha256}}``."""
DATA_FILE = "data/train.parquet"
"""Where the rows of a data export go in the dataset repo (the hub reads it as a train split)."""


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    from huggingface_hub import constants

    export = node.node
    hub = export.hub
    if constants.HF_HUB_OFFLINE:
        raise RunError(
            f'HF_HUB_OFFLINE is set, so nothing can be committed to hub("{hub.repo_id}"); '
            "unset it for this run (or export to a path)"
        )
    token = secret(export.token) if export.token is not None else None
    rows = export.train.name not in ctx.program.recipe.trains
    folder = out / "upload"
    folder.mkdir()
    if rows:
        table = export_data._table(ctx, export.train.name)
        (folder / "data").mkdir()
        (folder / DATA_FILE).write_bytes(export_data.encode(table, "parquet"))
        text = dataset_card(ctx, export, table.num_rows, table.column_names)
        (folder / "README.md").write_text(text, encoding="utf-8")
    else:
        from .export import _source

        source, merged, lora = _source(ctx, export)
        shutil.copytree(source, folder, dirs_exist_ok=True)
        if export.card:
            text = model_card(ctx, export, merged=merged, lora=lora)
            (folder / "README.md").write_text(text, encoding="utf-8")
    repo_type = "dataset" if rows else "model"
    revision = export.revision or "main"
    commit = _commit(ctx, node, folder, repo_type, revision, token)
    files = file_hashes(folder)
    record = {
        "repo": hub.repo_id,
        "repo_type": repo_type,
        "revision": revision,
        "commit": commit.oid,
        "url": commit.commit_url,
        "files": dict(sorted(files.items())),
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(folder)  # the files are in the cache already (the model) or cheap to remake
    return {"rows": None, **{k: v for k, v in record.items() if k != "files"}}


def restore(node: PlanNode, ctx: StageContext, artifact: Path) -> str | None:
    """Nothing to put back: the hub keeps what the export committed."""
    return None


def _commit(ctx: StageContext, node: PlanNode, folder: Path, repo_type: str, revision: str, token):
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    export = node.node
    repo = export.hub.repo_id
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    api = HfApi(endpoint=endpoint.rstrip("/"), token=token)
    message = f"kdlang: {ctx.program.recipe.title}, {node.name}"
    try:
        api.create_repo(repo, repo_type=repo_type, private=export.private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo, branch=revision, repo_type=repo_type, exist_ok=True)
        return api.upload_folder(
            repo_id=repo,
            folder_path=str(folder),
            repo_type=repo_type,
            revision=revision,
            commit_message=message,
        )
    except (HfHubHTTPError, OSError, ValueError) as error:
        text = str(error)
        for hidden in (token, os.environ.get("HF_TOKEN")):
            if hidden:
                text = text.replace(hidden, "…")
        raise RunError(f'cannot commit to hub("{repo}") at {endpoint}: {text}') from None
