"""`tunestack models`, `datasets` and `download` through the real CLI; downloads come from a fake Hugging Face Hub on
loopback that serves small files itself and redirects weights to a CDN, as the real Hub does."""

import json
from pathlib import Path

import pytest

from fake_hubs import COMMIT, ServedRepos, cdn_app, download_hub_app, serving
from helpers import cli


def test_models_lists_the_aliases_by_family_and_as_json():
    table = cli("models").stdout
    assert "smollm2-135m-instruct" in table and "HuggingFaceTB/SmolLM2-135M-Instruct" in table
    rows = json.loads(cli("models", "--json").stdout)["models"]
    assert any("smollm2-135m-instruct" in json.dumps(row) for row in rows)


def test_datasets_lists_the_built_ins():
    out = cli("datasets").stdout
    for name in ("self-cognition", "arith", "arith-pref"):
        assert name in out


@pytest.fixture()
def hub(tiny_model_dir):
    """The tiny model as `tester/tiny` (its safetensors in LFS, plus a README the model patterns leave out) and a
    dataset `tester/sums`."""
    model = {p.name: p.read_bytes() for p in Path(tiny_model_dir).iterdir() if p.is_file()}
    served = ServedRepos({"models/tester/tiny": {**model, "README.md": b"# tiny\n"},
                          "datasets/tester/sums": {"data/train.jsonl": b'{"text": "1 + 1 = 2"}\n'}})
    with serving(cdn_app(served)) as cdn, serving(download_hub_app(served)) as url:
        served.cdn = cdn
        yield url, served


def test_download_fetches_a_model_and_a_dataset_from_the_hub(hub, tiny_model_dir, tmp_path):
    url, served = hub
    env = {"HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "home")}
    path = Path(cli("download", "--model", "tester/tiny", env=env).stdout.strip().splitlines()[-1])
    assert path == tmp_path / "home" / "hub" / "models--tester--tiny" / "snapshots" / COMMIT
    weights = (Path(tiny_model_dir) / "model.safetensors").read_bytes()
    assert len(weights) > 100_000 and (path / "model.safetensors").read_bytes() == weights
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).read_bytes() == (Path(tiny_model_dir) / name).read_bytes()
    assert not (path / "README.md").exists()  # not a model file
    assert any(r.startswith("GET /lfs/") for r in served.requests)  # the weights came from the CDN
    assert "HEAD /tester/tiny/resolve/%s/model.safetensors" % COMMIT in served.requests
    # the cached copy serves the model offline
    answer = cli("infer", "--model", "tester/tiny", "--prompt", "hi", "--max_new_tokens", "3",
                 env={**env, "HF_HUB_OFFLINE": "1"})
    assert "Traceback" not in answer.stderr
    dataset = Path(cli("download", "--dataset", "tester/sums", env=env).stdout.strip().splitlines()[-1])
    assert (dataset / "data" / "train.jsonl").read_bytes() == b'{"text": "1 + 1 = 2"}\n'
    missing = cli("download", "--model", "tester/missing", env=env, check=False)
    assert missing.returncode != 0 and "tester/missing" in missing.stderr and "Traceback" not in missing.stderr
