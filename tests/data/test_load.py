"""load_datasets end to end: sources of every kind, sampling, registrations, built-ins, streaming, splits, errors."""

import json
import re
import subprocess
import sys

import pytest

from helpers import cli_env
from tunestack.config import DataArgs
from tunestack.data import BUILTIN_DATASETS, list_datasets, load_datasets
from tunestack.errors import DataError


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def load_error(load_data, specs, task="sft", **fields) -> str:
    with pytest.raises(DataError) as e:
        load_data(specs, task, **fields)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_each_file_type(write_file, load_data, suffix):
    path = write_file(f"data{suffix}", [{"query": f"q{i}", "response": f"r{i}"} for i in range(3)])
    splits = load_data([path])
    assert splits.train.column_names == ["messages"]
    assert splits.train[2] == chat("q2", "r2")
    assert splits.val is None
    assert splits.report["train"] == [
        {"name": str(path), "files": [{"file": str(path), "format": "query", "rows": 3}], "rows_read": 3,
         "rows_sampled": 3}  # fmt: skip
    ]


def test_csv_empty_optional_cells(tmp_path, load_data):
    path = tmp_path / "data.csv"
    path.write_text("instruction,input,output,history,system\nAdd,1 2,3,,\nSay hi,,hi,,Be kind.\n", encoding="utf-8")
    rows = load_data([path]).train[:]["messages"]
    assert rows[0] == [{"role": "user", "content": "Add\n1 2"}, {"role": "assistant", "content": "3"}]
    assert rows[1][0] == {"role": "system", "content": "Be kind."}


def test_txt_for_pretraining(tmp_path, load_data):
    (tmp_path / "book.txt").write_text("line one\n\nline two\n", encoding="utf-8")
    assert load_data([tmp_path / "book.txt"], "pt").train[:]["text"] == ["line one", "line two"]


def test_mixed_formats_are_concatenated(write_file, load_data):
    specs = [
        write_file("a.jsonl", [chat("a", "A")]),
        write_file("b.csv", [{"instruction": "b", "output": "B"}]),
        write_file("c.parquet", [{"query": "c", "response": "C"}]),
        write_file("d.json", [{"conversations": [{"from": "human", "value": "d"}, {"from": "gpt", "value": "D"}]}]),
    ]
    splits = load_data(specs)
    assert splits.train[:]["messages"] == [chat(q, q.upper())["messages"] for q in "abcd"]
    assert [s["files"][0]["format"] for s in splits.report["train"]] == ["messages", "alpaca", "query", "sharegpt"]
    assert splits.report["train_rows"] == 4


def test_folder_reads_every_file_with_its_own_format(write_file, load_data, tmp_path):
    write_file("folder/one.jsonl", [chat("1", "one")])
    write_file("folder/sub/two.csv", [{"query": "2", "response": "two"}, {"query": "3", "response": "three"}])
    (tmp_path / "folder" / "notes.md").write_text("ignored")
    splits = load_data([tmp_path / "folder"])
    assert len(splits.train) == 3
    assert [(f["format"], f["rows"]) for f in splits.report["train"][0]["files"]] == [("messages", 1), ("query", 2)]


def test_sampling_is_seeded(write_file, load_data):
    path = write_file("data.jsonl", [chat(str(i), "x") for i in range(50)])
    first = load_data([f"{path}#10"]).train[:]["messages"]
    assert len(first) == 10
    assert load_data([f"{path}#10"]).train[:]["messages"] == first
    assert load_data([f"{path}#10"], seed=7).train[:]["messages"] != first


def test_sampling_more_than_available_takes_all(write_file, load_data):
    path = write_file("data.jsonl", [chat(str(i), "x") for i in range(5)])
    splits = load_data([f"{path}#100"])
    assert len(splits.train) == 5
    assert splits.report["train"][0] | {"files": None} == {
        "name": f"{path}#100", "files": None, "rows_read": 5, "rows_sampled": 5
    }


@pytest.mark.parametrize("count", ["abc", "0", ""])
def test_bad_sample_count(write_file, load_data, count):
    path = write_file("data.jsonl", [chat("a", "b")])
    message = load_error(load_data, [f"{path}#{count}"])
    assert message.startswith(f"{path}#{count}: the sample count '{count}' is not a positive whole number")


# --- dataset registration ---------------------------------------------------------------------------------------


def test_registered_dataset_with_columns_and_val(write_file, load_data, tmp_path):
    write_file("files/train.jsonl", [{"question": f"q{i}", "answer": f"a{i}"} for i in range(4)])
    write_file("files/val.jsonl", [{"question": "vq", "answer": "va"}])
    info = tmp_path / "info.yaml"
    info.write_text(
        "mine:\n  train: files/train.jsonl\n  val: [files/val.jsonl]\n  columns: {question: query, answer: response}\n"
        "  task: sft\n"
    )
    splits = load_data(["mine"], dataset_info=str(info), val_ratio=0.5)
    assert len(splits.train) == 4
    assert splits.val[:]["messages"] == [chat("vq", "va")["messages"]]
    assert splits.report["val_from"] == "dataset_info"


def test_registered_task_must_match(write_file, load_data, tmp_path):
    write_file("t.jsonl", [{"text": "a"}])
    (tmp_path / "info.yaml").write_text("raw: {file: t.jsonl, task: pt}\n")
    assert load_data(["raw"], "pt", dataset_info=str(tmp_path / "info.yaml")).train[:]["text"] == ["a"]
    message = load_error(load_data, ["raw"], dataset_info=str(tmp_path / "info.yaml"))
    assert message == f"raw is declared as pt data in {tmp_path / 'info.yaml'}; sft cannot use it"


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("mine: {file: a.jsonl, colums: {}}", "dataset 'mine' has unknown key 'colums'; expected file, train, val"),
        ("mine: {val: a.jsonl}", "dataset 'mine' needs exactly one of file, train or hub"),
        ("mine: {file: a.jsonl, task: dpo}", "dataset 'mine': task is 'dpo'; expected sft, pt, preference, kto or prompts"),
        ("mine: {file: a.jsonl, columns: {q: qeury}}", "columns maps 'q' to 'qeury', which is not a field"),
        ("mine: {file: 3}", "dataset 'mine': file is a number (3); expected a path or a list of paths"),
        ("- a.jsonl", "expected a mapping of dataset names"),
        ("mine: {file: [a.jsonl}", "not valid YAML"),
    ],
)
def test_bad_registration(load_data, tmp_path, yaml_text, expected):
    (tmp_path / "info.yaml").write_text(yaml_text)
    message = load_error(load_data, ["mine"], dataset_info=str(tmp_path / "info.yaml"))
    assert message.startswith(f"{tmp_path / 'info.yaml'}: ") and expected in message


def test_registered_hub_dataset_offline(load_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "info.yaml").write_text("remote: {hub: tunestack-tests/none, subset: en, split: test}")
    message = load_error(load_data, ["remote"], dataset_info=str(tmp_path / "info.yaml"))
    assert message.startswith("hub dataset tunestack-tests/none:en@test")


def test_unknown_name_lists_registered_names(load_data, tmp_path):
    (tmp_path / "info.yaml").write_text("mine: {file: a.jsonl}\ntheirs: {file: b.jsonl}")
    message = load_error(load_data, ["minee"], dataset_info=str(tmp_path / "info.yaml"))
    assert f"names declared in {tmp_path / 'info.yaml'} (mine, theirs)" in message


def test_registered_file_missing(load_data, tmp_path):
    (tmp_path / "info.yaml").write_text("mine: {train: gone.jsonl}")
    message = load_error(load_data, ["mine"], dataset_info=str(tmp_path / "info.yaml"))
    assert message == (
        f"file not found: {tmp_path / 'gone.jsonl'} (no such file or folder; declared as 'train' of 'mine' in "
        f"{tmp_path / 'info.yaml'})"
    )


# --- built-ins ----------------------------------------------------------------------------------------------------


def test_self_cognition_is_filled_in_both_languages(load_data):
    rows = load_data(["self-cognition"], model_name="Aria", model_author="Example Labs").train[:]["messages"]
    assert len(rows) >= 100
    text = json.dumps(rows, ensure_ascii=False)
    assert "{{" not in text
    answers = {m[0]["content"]: m[1]["content"] for m in rows}
    assert any(re.search(r"[\u4e00-\u9fff]", q) for q in answers) and any(q.isascii() for q in answers)
    questions = [m[0]["content"] for m in rows]
    assert questions.count("What is your name?") >= 2 and questions.count("Who made you?") >= 2
    for m in rows:
        if m[0]["content"] in ("What is your name?", "你叫什么名字？"):
            assert "Aria" in m[1]["content"]
        if m[0]["content"] in ("Who made you?", "谁开发了你？"):
            assert "Example Labs" in m[1]["content"]
    assert all("Aria" in m[1]["content"] or "Example Labs" in m[1]["content"] for m in rows)


def test_self_cognition_needs_name_and_author(load_data):
    assert load_error(load_data, ["self-cognition"], model_name="Aria").startswith(
        "self-cognition needs --model_name and --model_author"
    )


def test_arith_answers_are_correct(load_data):
    rows = load_data(["arith"]).train[:]["messages"]
    assert len(rows) == 1000
    ops = set()
    for question, answer in rows:
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", question["content"]).groups()
        ops.add(op)
        expected = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert answer["content"] == f"{a} {op} {b} = {expected}."
    assert ops == {"+", "-", "*"}


def test_arith_is_deterministic(load_data):
    assert load_data(["arith#20"]).train[:]["messages"] == load_data(["arith#20"]).train[:]["messages"]


def test_arith_pref_chosen_right_rejected_wrong(load_data):
    for row in load_data(["arith-pref"], "preference").train:
        a, op, b, value = re.fullmatch(r"(\d+) ([-+*]) (\d+) = (-?\d+)\.", row["chosen"][0]["content"]).groups()
        assert int(value) == eval(f"{a} {op} {b}")  # noqa: S307 - digits and one operator, matched above
        assert row["rejected"][0]["content"] != row["chosen"][0]["content"]
        assert row["rejected"][0]["content"].startswith(f"{a} {op} {b} = ")


def test_arith_pref_for_kto_has_both_labels(load_data):
    labels = load_data(["arith-pref"], "kto").train[:]["label"]
    assert set(labels) == {True, False}


def test_builtin_for_the_wrong_task(load_data):
    assert load_error(load_data, ["arith-pref"]).startswith("arith-pref is preference and kto data; sft cannot use it")


def test_list_datasets():
    listed = {d["name"]: d for d in list_datasets()}
    assert list(listed) == list(BUILTIN_DATASETS)
    assert listed["arith"]["rows"] == 1000 and listed["arith-pref"]["task"] == "preference"
    assert listed["self-cognition"]["rows"] >= 100


# --- streaming ----------------------------------------------------------------------------------------------------


def test_streaming_reads_lazily(tmp_path, load_data):
    path = tmp_path / "big.jsonl"
    good = "".join(json.dumps(chat(f"q{i}", f"a{i}")) + "\n" for i in range(2000))
    path.write_text(good + "{broken\n", encoding="utf-8")
    splits = load_data([path], streaming=True)  # the bad last line is not read yet
    rows = iter(splits.train)
    assert next(rows) == chat("q0", "a0")
    assert splits.report["train"][0]["files"][0]["format"] == "messages"
    with pytest.raises(DataError, match=r"big.jsonl, line 2001: not valid JSON"):
        for _ in rows:
            pass
    with pytest.raises(DataError, match=r"big.jsonl, line 2001"):
        load_data([path])  # without streaming every line is checked up front


def test_streaming_sample_takes_the_first_rows(write_file, load_data):
    path = write_file("data.jsonl", [chat(str(i), "x") for i in range(10)])
    rows = load_data([f"{path}#3"], streaming=True).train
    assert [row["messages"][0]["content"] for row in rows] == ["0", "1", "2"]


def test_streaming_with_val_ratio_names_both_flags(write_file, load_data):
    path = write_file("data.jsonl", [chat("a", "b")])
    message = load_error(load_data, [path], streaming=True, val_ratio=0.1)
    assert message.startswith("--streaming and --val_ratio 0.1 cannot be combined")


def test_streaming_checks_the_first_row_now(write_file, load_data):
    path = write_file("data.jsonl", [{"ask": "x"}])
    assert load_error(load_data, [path], streaming=True).startswith(f"{path}, line 1: expected a \"messages\" list")


# --- validation split ---------------------------------------------------------------------------------------------


def test_val_ratio_split(write_file, load_data):
    path = write_file("data.jsonl", [chat(str(i), "x") for i in range(100)])
    splits = load_data([path], val_ratio=0.1)
    assert (len(splits.train), len(splits.val)) == (90, 10)
    assert splits.report | {"train": None, "val": None} == {
        "task": "sft", "streaming": False, "train": None, "val": None, "val_from": "val_ratio", "train_rows": 90,
        "val_rows": 10,
    }  # fmt: skip
    assert load_data([path], val_ratio=0.1).val[:]["messages"] == splits.val[:]["messages"]
    questions = [{m[0]["content"] for m in split[:]["messages"]} for split in (splits.train, splits.val)]
    assert not questions[0] & questions[1]


def test_val_dataset_overrides_ratio(write_file, load_data):
    train = write_file("train.jsonl", [chat(str(i), "x") for i in range(10)])
    val = write_file("val.csv", [{"query": "v", "response": "w"}])
    splits = load_data([train], val_dataset=[str(val)], val_ratio=0.5)
    assert (len(splits.train), len(splits.val), splits.report["val_from"]) == (10, 1, "val_dataset")


@pytest.mark.parametrize("ratio", [1.0, -0.1])
def test_val_ratio_out_of_range(write_file, load_data, ratio):
    path = write_file("data.jsonl", [chat("a", "b")])
    assert load_error(load_data, [path], val_ratio=ratio) == (
        f"--val_ratio is {ratio}; expected a fraction in [0, 1), e.g. 0.05"
    )


def test_val_ratio_leaving_no_training_rows(write_file, load_data):
    path = write_file("data.jsonl", [chat("a", "b"), chat("c", "d")])
    assert load_error(load_data, [path], val_ratio=0.9).startswith("--val_ratio 0.9 leaves no training rows out of 2")


# --- errors -------------------------------------------------------------------------------------------------------


def test_file_not_found(load_data):
    assert load_error(load_data, ["x.jsonl"]) == (
        "file not found: x.jsonl (no such file; datasets are local files, folders, built-ins "
        "(self-cognition, arith, arith-pref, shapes) or hub ids)"
    )


def test_unsupported_file_type(tmp_path, load_data):
    (tmp_path / "x.xml").write_text("<rows/>")
    assert load_error(load_data, [tmp_path / "x.xml"]) == (
        f"{tmp_path / 'x.xml'}: unsupported file type .xml; expected .jsonl, .json, .csv, .parquet or .txt"
    )


def test_empty_file(tmp_path, load_data):
    (tmp_path / "data.jsonl").write_text("\n")
    assert load_error(load_data, [tmp_path / "data.jsonl"]) == f"{tmp_path / 'data.jsonl'}: empty dataset (no rows)"


def test_no_dataset(load_data):
    assert load_error(load_data, []).startswith("no dataset given: pass --dataset FILE")


def test_bad_row_deep_in_a_file_fails_up_front(tmp_path, load_data):
    rows = [chat(str(i), "x") for i in range(6)] + [{"messages": [{"role": "bot", "content": "x"}]}]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    expected = f"{path}, line 7: messages[0].role is 'bot'; expected system, user, assistant, tool or model"
    assert load_error(load_data, [path]) == expected


def test_hub_id_offline_is_one_line(load_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = load_error(load_data, ["tunestack-tests/no-such-dataset:main@test"])
    assert message.startswith("hub dataset tunestack-tests/no-such-dataset:main@test")


def test_downloaded_hub_dataset_loads_offline(tmp_path):
    repo = tmp_path / "hub" / "datasets--tunestack-tests--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    data = repo / "snapshots" / ("0" * 40) / "data" / "train.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"query": "q", "response": "r"}) + "\n")
    code = (
        "from tunestack.config import DataArgs; from tunestack.data import load_datasets; "
        "print(load_datasets(DataArgs(dataset=['tunestack-tests/tiny'])).train[0])"
    )
    caches = {"HF_HOME": tmp_path, "HF_HUB_CACHE": tmp_path / "hub", "HF_DATASETS_CACHE": tmp_path / "datasets"}
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(caches), capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(chat("q", "r")), out.stderr[-2000:]


def test_unknown_task_is_a_programming_error():
    with pytest.raises(ValueError, match="task is 'dpo'"):
        load_datasets(DataArgs(dataset=["arith"]), "dpo")


def test_import_loads_neither_torch_nor_transformers():
    code = "import sys, tunestack.data; print(sorted({'torch', 'transformers', 'datasets'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env())
    assert result.stdout == "[]\n"


def test_a_built_in_brings_its_recommended_settings_for_the_flags_left_out(tiny_model_dir, tmp_path):
    from tunestack.config import TrainArgs, TunerArgs, parse_groups
    from tunestack.data.builtin import recommended_in_effect, recommended_presets

    def settings(*argv):
        data, tuner, train = parse_groups([DataArgs, TunerArgs, TrainArgs], list(argv), presets=recommended_presets)
        return ((tuner.lora_rank, train.learning_rate, train.num_train_epochs, train.per_device_train_batch_size),
                recommended_in_effect(data, tuner, train))

    assert settings("--dataset", "self-cognition")[0] == (16, 5e-4, 5.0, 8)
    # Given flags win, even when they equal the generic default (4 examples a step).
    assert settings("--dataset", "self-cognition#40", "--lora_rank", "4", "--learning_rate", "1e-3",
                    "--per_device_train_batch_size", "4")[0] == (4, 1e-3, 5.0, 4)
    assert settings("--dataset", "self-cognition,arith")[0] == (8, None, 3.0, 4)  # a mix: the generic defaults
    # packed, a row holds some 15 of its chats: one row a step, else 5 steps in all
    assert settings("--dataset", "self-cognition", "--packing")[0] == (16, 5e-4, 5.0, 1)
    assert settings("--dataset", "self-cognition", "--packing", "false")[0] == (16, 5e-4, 5.0, 8)
    assert settings("--dataset", "self-cognition", "--packing", "--per_device_train_batch_size", "2")[0][3] == 2
    assert settings("--dataset", "self-cognition", "--packing")[1]["per_device_train_batch_size"] == 1
    assert settings("--dataset", "arith")[1] == {}
    assert settings("--dataset", "self-cognition", "--tuner", "full")[1] == {  # the adapter's rank and rate stay out
        "num_train_epochs": 5.0, "per_device_train_batch_size": 8}
    result = subprocess.run(
        [sys.executable, "-m", "tunestack", "sft", "--model", str(tiny_model_dir), "--dataset", "self-cognition",
         "--model_name", "Aria", "--model_author", "Example Labs", "--max_steps", "1", "--lora_rank", "4",
         "--output_dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=600,
        env=cli_env())
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("self-cognition's recommended settings (a flag overrides any): --learning_rate 0.0005, "
            "--num_train_epochs 5, --per_device_train_batch_size 8") in result.stderr
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert json.dumps(manifest).count('"per_device_train_batch_size": 8') == 1, manifest


def test_shapes_recommends_training_the_vision_side_in_full_unless_another_tuner_is_chosen():
    from tunestack.config import TrainArgs, TunerArgs, parse_groups
    from tunestack.data.builtin import recommended_in_effect, recommended_presets

    def parsed(*argv):
        data, tuner, train = parse_groups([DataArgs, TunerArgs, TrainArgs], list(argv), presets=recommended_presets)
        return tuner, train, recommended_in_effect(data, tuner, train)

    tuner, train, applied = parsed("--dataset", "shapes")
    assert (tuner.tuner, tuner.freeze_language, tuner.freeze_vision, train.learning_rate) == ("full", True, False, 1e-3)
    assert applied["tuner"] == "full" and applied["freeze_language"] is True
    tuner, train, applied = parsed("--dataset", "shapes", "--tuner", "lora")  # an adapter on the language model
    assert (tuner.tuner, tuner.freeze_language, tuner.freeze_vision, train.learning_rate) == ("lora", False, True, None)
    assert applied == {"num_train_epochs": 3.0, "per_device_train_batch_size": 8}
