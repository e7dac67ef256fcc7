"""The model card written beside every export, and the upload of a finished export to a hub."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from tunestack.errors import MissingExtraError, TunestackError
from tunestack.jsonfile import read_json_object
from tunestack.progress import EVENTS_FILE

_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def check_push(repo: str, hub: str) -> None:
    """Fail before any model loads when the upload could not happen: a bad name, offline, no library or no login."""
    if not _REPO.fullmatch(repo):
        raise TunestackError(f"--push_to_hub {repo}: expected a repository name such as my-org/my-model")
    if hub == "modelscope":
        _check_modelscope(repo)
        return
    from huggingface_hub import HfApi

    from tunestack.hub.reach import hub_offline

    if hub_offline():
        raise TunestackError(f"--push_to_hub {repo}: HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it, "
                             "or export without --push_to_hub and upload later with `hf upload`")
    try:
        HfApi().whoami()
    except Exception as error:  # no token, a rejected token, or no route to the hub
        raise TunestackError(f"--push_to_hub {repo}: cannot reach the Hugging Face Hub as a logged-in user "
                             f"({_reason(error)}); log in with `hf auth login` or set HF_TOKEN, check "
                             "HF_ENDPOINT and the network, or export without --push_to_hub") from None


def push(folder: Path, repo: str, hub: str, private: bool) -> str:
    """Upload a complete export folder; returns the repository's address."""
    message = "Upload model exported with tunestack"
    try:
        if hub == "modelscope":
            from modelscope.hub.api import HubApi as ModelScopeApi

            api = ModelScopeApi()
            # upload_folder would create a missing repository as public, so create it first with the visibility asked
            api.create_repo(repo, visibility="private" if private else "public", exist_ok=True)
            # use_cache=False: its resume record would otherwise be written into the export folder
            api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message, use_cache=False,
                              ignore_patterns=[EVENTS_FILE])
            return f"{api.endpoint}/models/{repo}"
        from huggingface_hub import HfApi

        api = HfApi()
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=message,
                          ignore_patterns=[EVENTS_FILE])  # the export's progress, not part of the model
        return str(url)
    except Exception as error:
        retry = f"modelscope upload {repo} {folder}" if hub == "modelscope" else f"hf upload {repo} {folder}"
        raise TunestackError(f"--push_to_hub {repo}: upload failed ({_reason(error)}); the export itself is complete "
                             f"in {folder}; retry with `{retry}`") from None


def _check_modelscope(repo: str) -> None:
    """The ModelScope side of check_push: the library is installed and its token is accepted."""
    if importlib.util.find_spec("modelscope") is None:
        raise MissingExtraError("modelscope", "modelscope", "--push_to_hub with --hub modelscope")
    from modelscope.hub.api import HubApi as ModelScopeApi

    try:
        ModelScopeApi().whoami()
    except Exception as error:  # no token, a rejected token, or no route to ModelScope
        raise TunestackError(f"--push_to_hub {repo}: cannot reach ModelScope as a logged-in user ({_reason(error)}); "
                             "log in with `modelscope login --token TOKEN` or set MODELSCOPE_API_TOKEN, check "
                             "MODELSCOPE_ENDPOINT and the network, or export without --push_to_hub") from None


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def model_card(folder: Path, record: dict, base_model: str | None, repo: str | None = None) -> str:
    """A README.md in the Hub's model-card format: base model, data, method, and measured results."""
    run_dir = record["source"].get("run_dir")
    run = read_json_object(Path(run_dir) / "run.json") if run_dir else {}
    datasets = run.get("config", {}).get("data", {}).get("dataset", [])
    adapters = record["source"]["adapters"]
    quant = record.get("quantization")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- tunestack"]
    if base_model:
        lines += ["base_model:", f"- {base_model}"]
    lines += ["---", "", f"# {folder.name}", ""]
    lines.append(f"Exported with tunestack from `{record['source']['model']}` (base: `{base_model or 'unknown'}`).")
    lines += ["", "| | |", "|---|---|"]
    if run:
        tuner = run.get("config", {}).get("tuner", {})
        lines.append(f"| fine-tuning | {tuner.get('tuner', '?')} (rank {tuner.get('lora_rank', '?')}), "
                     f"{run.get('status', '?')} |")
    if datasets:
        lines.append(f"| data | {', '.join(f'`{d}`' for d in datasets)} |")
    if adapters:
        merged = ", ".join(f"{a['type']} `{a['given']}`" for a in adapters)
        lines.append(f"| adapters merged | {merged} |")
    lines.append(f"| weights | {record['settings']['dtype']}"
                 + (f", {quant['type']} via {quant['backend']}" if quant else "") + " |")
    lines.append(f"| size | {record['sizes']['weights_bytes'] / 1e6:.1f} MB |")
    if "perplexity" in record:
        ppl = record["perplexity"]
        lines.append(f"| perplexity (held-out text, {ppl['tokens']} tokens) | source {ppl['source']:.3f}, "
                     f"export {ppl['export']:.3f} ({ppl['change_pct']:+.2f}%) |")
    lines += _eval_lines(Path(run_dir)) if run_dir else []
    name = repo or folder.name
    if quant and quant["backend"] == "optimum-quanto":  # transformers cannot read quanto checkpoints
        load = ["from optimum.quanto import QuantizedModelForCausalLM", "from transformers import AutoTokenizer", "",
                f'model = QuantizedModelForCausalLM.from_pretrained("{name}")']
    else:
        load = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'model = AutoModelForCausalLM.from_pretrained("{name}")']
    lines += ["", "```python", *load, f'tokenizer = AutoTokenizer.from_pretrained("{name}")', "```", ""]
    return "\n".join(lines)


def _eval_lines(run_dir: Path) -> list[str]:
    """Rows for the scores `tunestack sft --eval_tasks` wrote into the run (run/eval/report.json), if any."""
    path = run_dir / "eval" / "report.json"
    if not path.is_file():
        return []
    rows = []
    for task, result in read_json_object(path).get("tasks", {}).items():
        for name, metric in result.get("metrics", {}).items():
            if isinstance(metric.get("value"), (int, float)):
                error = f" ± {metric['stderr']:.4f}" if isinstance(metric.get("stderr"), (int, float)) else ""
                rows.append(f"| eval: {task} {name} (n={result.get('n')}) | {metric['value']:.4f}{error} |")
    return rows
