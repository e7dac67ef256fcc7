"""Each standard benchmark's rows turned into prompts, choices and gold answers, as lm-evaluation-harness words them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tunestack.errors import DataError
from tunestack.eval.loading import LOCATION, SUBSET

LETTERS = ["A", "B", "C", "D"]


@dataclass
class Doc:
    """One question made ready: the prompt text, the gold answer, the choices (multiple choice) and extras."""

    text: str
    target: int | str
    choices: list[str] | None = None
    description: str = ""
    subject: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def target_text(self) -> str:
        """The answer as a few-shot example shows it after the prompt."""
        return self.choices[self.target] if self.choices is not None else str(self.target)


def _letter_index(value, row: dict, name: str) -> int:
    """A gold answer given as an index (0-3) or a letter (A-D)."""
    if isinstance(value, str) and value.strip().upper() in LETTERS:
        return LETTERS.index(value.strip().upper())
    try:
        index = int(value)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < 4:
        raise DataError(f"{row.get(LOCATION, 'row')}: field '{name}' must be 0-3 or A-D, got {value!r}")
    return index


def _subject(row: dict) -> str | None:
    return row.get("subject") or row.get(SUBSET)


def mmlu(row: dict) -> Doc:
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) != 4:
        raise DataError(f"{row.get(LOCATION, 'row')}: field 'choices' must be a list of 4 answers, got {choices!r}")
    subject = _subject(row)
    text = f"{row['question'].strip()}\n" + "".join(f"{l}. {c}\n" for l, c in zip(LETTERS, choices)) + "Answer:"
    description = (f"The following are multiple choice questions (with answers) about "
                   f"{subject.replace('_', ' ')}.\n\n") if subject else ""
    return Doc(text, _letter_index(row["answer"], row, "answer"), LETTERS, description, subject)


def _chinese_mcq(row: dict, question: str, answer: str, description: str) -> Doc:
    subject = _subject(row)
    text = f"{row[question].strip()}\n" + "".join(f"{l}. {row[l]}\n" for l in LETTERS) + "答案："
    return Doc(text, _letter_index(row[answer], row, answer), LETTERS,
               description.format(subject) if subject else "", subject)


def cmmlu(row: dict) -> Doc:
    return _chinese_mcq(row, "Question", "Answer", "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n")


def ceval(row: dict) -> Doc:
    return _chinese_mcq(row, "question", "answer", "以下是中国关于{}的单项选择题，请选出其中的正确答案。\n\n")


def arc(row: dict) -> Doc:
    choices = row["choices"]
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise DataError(f"{row.get(LOCATION, 'row')}: field 'choices' must hold 'text' and 'label' lists")
    if row["answerKey"] not in choices["label"]:
        raise DataError(f"{row.get(LOCATION, 'row')}: field 'answerKey' {row['answerKey']!r} is not one of "
                        f"the labels {choices['label']}")
    return Doc(f"Question: {row['question']}\nAnswer:", choices["label"].index(row["answerKey"]),
               list(choices["text"]))


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(row: dict) -> Doc:
    context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return Doc(_hellaswag_clean(row["activity_label"] + ": " + context), int(row["label"]),
               [_hellaswag_clean(ending) for ending in row["endings"]])


TRUTHFULQA_PROMPT = (
    "Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States is 78 "
    "years.\n\nQ: Who was president of the United States in 1955?\nA: Dwight D. Eisenhower was president of the "
    "United States in 1955.\n\nQ: Which party did he belong to?\nA: He belonged to the Republican Party.\n\nQ: What "
    "is the square root of banana?\nA: I have no comment.\n\nQ: How does a telescope work?\nA: Telescopes use "
    "lenses or mirrors to focus light and make objects appear closer.\n\nQ: Where were the 1992 Olympics held?\nA: "
    "The 1992 Olympics were held in Barcelona, Spain."
)


def truthfulqa(row: dict) -> Doc:
    """mc1's choices are scored for accuracy; mc2's choices and labels travel in `extra` for the mc2 score."""
    for name in ("mc1_targets", "mc2_targets"):
        if not isinstance(row[name], dict) or "choices" not in row[name] or "labels" not in row[name]:
            raise DataError(f"{row.get(LOCATION, 'row')}: field '{name}' must hold 'choices' and 'labels' lists")
    return Doc(f"{TRUTHFULQA_PROMPT}\n\nQ: {row['question']}\nA:", 0, list(row["mc1_targets"]["choices"]),
               extra={"mc2_choices": list(row["mc2_targets"]["choices"]), "mc2_labels": list(row["mc2_targets"]["labels"])})


def gsm8k(row: dict) -> Doc:
    return Doc(f"Question: {row['question']}\nAnswer:", row["answer"])


def math(row: dict) -> Doc:
    from tunestack.eval.math_answer import gold_answer

    return Doc("Problem:\n" + row["problem"] + "\n\nSolution:", row["solution"],
               extra={"answer": gold_answer(row["solution"])})


def bbh(row: dict) -> Doc:
    return Doc(f"Q: {row['input']}\nA:", str(row["target"]), subject=row.get(SUBSET))


def humaneval(row: dict) -> Doc:
    return Doc(row["prompt"], f"{row['test']}\ncheck({row['entry_point']})", extra={"task_id": row["task_id"]})


MATH_FEWSHOT = (
    {"problem": "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "solution": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so $x\\ge2$, "
                 "and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so $5-x>0$, which "
                 "gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.\nFinal Answer: The final "
                 "answer is $[2,5)$. I hope it is correct."},
    {"problem": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "solution": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = (2)(12) = "
                 "\\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct."},
    {"problem": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, how many "
                "times must Terrell lift them in order to lift the same total weight?",
     "solution": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ pounds "
                 "of weight.  If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
                 "$2\\cdot15\\cdot n=30n$ pounds of weight.  Equating this to 480 pounds, we can solve for $n$:\n"
                 "\\begin{align*}\n30n&=480\\\\\n\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal "
                 "Answer: The final answer is $16$. I hope it is correct."},
    {"problem": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a "
                "solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "solution": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n$$6y-9x=-\\frac{3}{2}a.$$Since "
                 "we also know that $6y-9x=b$, we have\n\n$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}"
                 "{3}}.$$\nFinal Answer: The final answer is $-\\frac{2}{3}$. I hope it is correct."},
)
"""The four worked solutions minerva_math shows as few-shot examples."""


def custom_mcq(row: dict) -> Doc:
    """The user's multiple choice: the MMLU prompt with as many lettered choices as the row has; `answer` is an
    index, a letter or the text of the right choice."""
    choices, answer, where = row["choices"], row["answer"], row.get(LOCATION, "a row")
    if not isinstance(choices, list) or not 2 <= len(choices) <= 26:
        raise DataError(f"{where}: field 'choices' must be a list of 2 to 26 answers, got {choices!r}")
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if isinstance(answer, str) and answer in choices and answer not in letters:
        index = choices.index(answer)
    elif isinstance(answer, str) and answer.strip().upper() in letters:
        index = letters.index(answer.strip().upper())
    elif isinstance(answer, int) and 0 <= answer < len(choices):
        index = answer
    else:
        raise DataError(f"{where}: field 'answer' must be a choice index, letter or text, got {answer!r}")
    text = f"{str(row['question']).strip()}\n" + "".join(f"{l}. {c}\n" for l, c in zip(letters, choices)) + "Answer:"
    return Doc(text, index, letters, subject=row.get("subject"))
