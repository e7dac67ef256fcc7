"""Snapshots from the Hugging Face Hub and ModelScope, failing in seconds, with the reason in one line."""

from __future__ import annotations

from pathlib import Path

from tunestack.errors import MissingExtraError
from tunestack.hub.cache import hub_cache_dir
from tunestack.hub.reach import endpoint_address, hub_endpoint, hub_offline, hub_reachable

MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.tiktoken", "*.txt", "*.py"]
"""What a model snapshot needs: config, tokenizer, chat template, safetensors weights and any custom code."""

PROBE_TIMEOUT_S = 10.0
"""How long the hub gets to answer before it counts as unreachable (huggingface_hub alone would wait forever)."""


class HubUnavailable(Exception):
    """Why a snapshot could not be had: `reason` is offline, unreachable, not_found, gated, revision or error."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.detail = detail


def looks_like_hub_id(name: str) -> bool:
    """Whether `name` is a valid `org/name` repository id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def cached_snapshot(repo_id: str, revision: str | None = None, repo_type: str = "model", patterns=None) -> Path | None:
    """The complete snapshot already in the local cache (None when absent or `repo_id` is no valid id); never touches
    the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        path = snapshot_download(
            repo_id, revision=revision, repo_type=repo_type, allow_patterns=patterns,
            cache_dir=hub_cache_dir(), local_files_only=True,
        )
    except (LocalEntryNotFoundError, HFValidationError):  # also an incomplete snapshot
        return None
    return Path(path)


def hf_snapshot(
    repo_id: str, revision: str | None = None, repo_type: str = "model", patterns=None, cache_first: bool = True
) -> tuple[Path, bool]:
    """The local snapshot of a hub repository and whether the cache served it; downloads (resumably) what is missing."""
    from huggingface_hub import snapshot_download

    if cache_first or hub_offline():
        cached = cached_snapshot(repo_id, revision, repo_type, patterns)
        if cached is not None:
            return cached, True
        if hub_offline():
            raise HubUnavailable("offline", "HF_HUB_OFFLINE=1")
    _probe(repo_id, revision, repo_type)
    try:
        path = snapshot_download(
            repo_id, revision=revision, repo_type=repo_type, allow_patterns=patterns, cache_dir=hub_cache_dir()
        )
    except Exception as error:
        raise _classify(error) from error
    return Path(path), False


def modelscope_snapshot(model_id: str, revision: str | None = None) -> Path:
    """The local snapshot of a ModelScope model (in ModelScope's own cache)."""
    try:
        from modelscope import snapshot_download
    except ImportError as error:
        raise MissingExtraError("modelscope", "modelscope", "Downloading from ModelScope") from error
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=MODEL_FILES))
    except Exception as error:
        raise HubUnavailable("modelscope", _first_line(error)) from error


def explain(error: HubUnavailable, repo_id: str, revision: str | None, what: str = "model") -> tuple[str, str]:
    """(what went wrong, what to do) for a failed snapshot: the first follows "NAME: ", the second is a sentence."""
    from huggingface_hub import constants

    page = f"{constants.ENDPOINT}/{'datasets/' if what == 'dataset' else ''}{repo_id}"
    fetch_elsewhere = (
        f"Download it where the hub is reachable (`tunestack download --{what} {repo_id}`) or pass a local path."
    )
    problems = {
        "offline": (f"not in the Hugging Face cache ({hub_cache_dir()}), and the hub is off (HF_HUB_OFFLINE=1)",
                    fetch_elsewhere),
        "unreachable": (f"not in the Hugging Face cache, and the Hugging Face Hub at {constants.ENDPOINT} "
                        f"could not be reached ({error.detail})", fetch_elsewhere),
        "not_found": (f"the Hugging Face Hub has no {what} repository '{repo_id}' (or it is private)",
                      "Check the spelling, log in for private repositories (`hf auth login`), or pass a local path."),
        "gated": (f"'{repo_id}' is gated on the Hugging Face Hub",
                  f"Accept its terms at {page} and log in (`hf auth login`), then retry."),
        "revision": (f"'{repo_id}' has no revision '{revision}'", "Pass an existing branch, tag or commit."),
        "modelscope": (f"ModelScope could not provide '{repo_id}' ({error.detail})",
                       f"Check the id at https://modelscope.cn/models/{repo_id}, or use --hub hf."),
    }
    default = (f"the Hugging Face Hub answered with an error ({error.detail})", "Retry later, or pass a local path.")
    return problems.get(error.reason, default)


def _probe(repo_id: str, revision: str | None, repo_type: str) -> None:
    """Ask the hub about the repository with a short timeout, so that a silent network fails in seconds."""
    from huggingface_hub import HfApi

    if not hub_reachable():
        host, port = endpoint_address(hub_endpoint())
        raise HubUnavailable("unreachable", f"no TCP connection to {host}:{port}")
    try:
        HfApi().repo_info(repo_id, revision=revision, repo_type=repo_type, timeout=PROBE_TIMEOUT_S)
    except Exception as error:
        raise _classify(error) from error


def _classify(error: Exception) -> HubUnavailable:
    """Sort a huggingface_hub or network exception into a HubUnavailable reason."""
    from huggingface_hub import errors as hf

    if isinstance(error, HubUnavailable):
        return error
    kinds = [
        (hf.OfflineModeIsEnabled, "offline"),
        (hf.GatedRepoError, "gated"),
        (hf.RepositoryNotFoundError, "not_found"),
        (hf.RevisionNotFoundError, "revision"),
        (hf.HfHubHTTPError, "error"),
    ]
    for kind, reason in kinds:
        if isinstance(error, kind):
            return HubUnavailable(reason, _first_line(error))
    return HubUnavailable("unreachable", f"{type(error).__name__}: {_first_line(error)}")


def _first_line(error: Exception, limit: int = 200) -> str:
    """The first line of an exception's message, cut to `limit` characters."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
