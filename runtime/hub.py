"""Whether a hub model can be had before anything tries to load it: in the local Hugging Face
cache, or the hub within reach (one request, once per process). Without this, a hub id that
is neither fails only after the libraries' retries, minutes later."""

from __future__ import annotations

HUB_PROBE_TIMEOUT = 5.0
_hub_probes: dict[str, str | None] = {}


def hub_unavailable(hub_id: str, revision: str | None = None) -> str | None:
    """Why the hub model ``hub_id`` cannot be loaded, or None when it can: it is in the local
    Hugging Face cache, or the hub answers. Not cached with ``HF_HUB_OFFLINE`` set, or with the
    hub out of reach (one request, :data:`HUB_PROBE_TIMEOUT` seconds, asked once per process),
    the answer names the id and what to do instead."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        if isinstance(try_to_load_from_cache(hub_id, "config.json", revision=revision), str):
            return None
    except ValueError:  # not a valid hub id: the library's own error says so, at once
        return None
    cache = constants.HF_HUB_CACHE
    where = f"the hub id {hub_id!r} is not in the local Hugging Face cache ({cache})"
    local = 'Use a local folder instead (hf("path/to/model"))'
    if constants.HF_HUB_OFFLINE:
        return (
            f"{where}, and HF_HUB_OFFLINE is set, so it is not downloaded. {local}, "
            f"or download it first where the hub can be reached (hf download {hub_id}), or "
            "unset HF_HUB_OFFLINE to download it now."
        )
    endpoint = constants.ENDPOINT
    if endpoint not in _hub_probes:
        _hub_probes[endpoint] = _probe(endpoint)
    failure = _hub_probes[endpoint]
    if failure is None:
        return None
    return (
        f"{where}, and the hub ({endpoint}) cannot be reached: {failure}. {local}, "
        f"or download it first where the hub can be reached (hf download {hub_id}); with "
        "HF_HUB_OFFLINE=1 nothing is asked of the network and only cached models load."
    )


def _probe(endpoint: str) -> str | None:
    """None when ``endpoint`` answers one HTTP request (any status), else why it did not. The
    request runs in a thread that is given up on after the timeout: resolving the host's
    name, which no timeout of the request bounds, can hang as long on a machine without a
    network."""
    import threading

    from huggingface_hub.utils import get_session

    outcome: list[str | None] = []

    def ask() -> None:
        try:
            get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT)  # redirects not followed
        except Exception as error:  # any failure to get an answer: refused, unresolved, timed out
            outcome.append(str(error) or type(error).__name__)
        else:
            outcome.append(None)

    thread = threading.Thread(target=ask, name="kdlang-hub-probe", daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT + 1)
    return outcome[0] if outcome else f"no answer within {HUB_PROBE_TIMEOUT:g} seconds"
