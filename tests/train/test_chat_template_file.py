"""--chat_template FILE.jinja: training masks follow it, the run records and saves it, and infer uses it."""

import json

import pytest

from helpers import CHAT_ROWS, cli, method_trainer, write_jsonl
from tunestack.errors import TunestackError

QA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Q: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'A:\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'A:\n' }}{% endif %}"
)


@pytest.fixture()
def template_file(tmp_path):
    path = tmp_path / "qa.jinja"
    path.write_text(QA_TEMPLATE)
    return path


def test_training_masks_follow_the_template_file(tiny_model_dir, tmp_path, template_file):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS[:4])
    trainer = method_trainer("sft", ["--model", str(tiny_model_dir), "--dataset", str(data),
                                     "--chat_template", str(template_file)], tmp_path / "run")
    tokenizer = trainer.processing_class
    row = trainer.train_dataset[0]
    question, answer = (m["content"] for m in CHAT_ROWS[0]["messages"])
    assert tokenizer.decode(row["input_ids"]) == f"Q: {question}\nA:\n{answer}<|im_end|>\n"
    trained = [token for token in row["labels"] if token != -100]
    assert tokenizer.decode(trained) == f"{answer}<|im_end|>\n"
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["template"] == f"file:{template_file.resolve()}"


def test_a_run_trained_on_a_template_file_answers_with_it(tiny_model_dir, tmp_path, template_file):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "2",
        "--learning_rate", "1e-2", "--chat_template", str(template_file), "--report_to", "none")
    assert AutoTokenizer.from_pretrained(run / "final").chat_template == QA_TEMPLATE

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run / "final").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # the model's own template, for contrast
    question = [{"role": "user", "content": "What is 3 + 4?"}]

    def greedy(template: str | None) -> str:
        ids = tokenizer.apply_chat_template(question, chat_template=template, add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    with_file, with_own = greedy(QA_TEMPLATE), greedy(None)
    assert with_file != with_own  # otherwise this test could not tell the templates apart
    answer = cli("infer", "--model", str(run), "--prompt", "What is 3 + 4?", "--max_new_tokens", "12",
                 "--dtype", "fp32").stdout
    assert answer == with_file + "\n"


def test_a_missing_or_broken_template_file_names_the_flag(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from tunestack.model.load import use_chat_template_file

    tiny_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # a copy of its own: the template changes

    with pytest.raises(TunestackError, match=f"--chat_template {tmp_path}/gone.jinja: file not found"):
        use_chat_template_file(tiny_tokenizer, str(tmp_path / "gone.jinja"))
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}")
    with pytest.raises(TunestackError, match=f"--chat_template {broken}: the template fails"):
        use_chat_template_file(tiny_tokenizer, str(broken))
