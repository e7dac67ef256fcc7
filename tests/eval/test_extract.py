"""Answer extraction from real-looking outputs: GSM8K's final number, MATH's final or boxed answer, bbh."""

from __future__ import annotations

from tunestack.eval.extract import bbh_scores, choice_letter, gsm8k_scores, last_number, truncate_at
from tunestack.eval.math_answer import extract_answer, gold_answer, is_equiv, normalize

GSM8K_GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"


def test_gsm8k_strict_match_needs_the_hash_marks():
    scores, extracted = gsm8k_scores(" She sold 48 + 24 = 72 clips altogether.\n#### 72", GSM8K_GOLD)
    assert extracted["strict-match"] == "72" and scores["exact_match,strict-match"] == 1.0
    scores, extracted = gsm8k_scores(" In May she sold 24, so in total she sold 72 clips.", GSM8K_GOLD)
    assert extracted["strict-match"] == "[invalid]" and scores["exact_match,strict-match"] == 0.0
    assert extracted["flexible-extract"] == "72" and scores["exact_match,flexible-extract"] == 1.0


def test_gsm8k_flexible_takes_the_last_number_and_ignores_commas_and_dollars():
    scores, extracted = gsm8k_scores(" The price is $1,250.", "Total: 1250.\n#### 1250")
    assert extracted["flexible-extract"] == "$1,250."
    assert scores["exact_match,flexible-extract"] == 1.0
    scores, _ = gsm8k_scores(" 10 apples minus 3 leaves 8.", "#### 7")
    assert scores["exact_match,flexible-extract"] == 0.0


def test_math_final_answer_phrase_and_boxed_answer():
    out = "We have $x = \\frac{1}{2}$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    assert extract_answer(out) == "\\frac{1}{2}"
    assert extract_answer("so the area is $\\boxed{12\\text{ cm}}$.") == "12"
    assert gold_answer("Thus $x = \\boxed{\\dfrac{3}{4}}$.") == "\\dfrac{3}{4}"
    assert extract_answer("I am not sure.") == "[invalidanswer]"


def test_math_normalisation_makes_equivalent_answers_equal():
    assert normalize("\\frac12") == "\\frac{1}{2}"
    assert normalize("100,000") == "100000"
    assert normalize("5 \\text{ degrees}") == normalize("5^\\circ") == "5"
    assert is_equiv(normalize("\\$18.90"), normalize("18.90"))
    assert not is_equiv("3", "4") and not is_equiv("[invalidanswer]", "[invalidanswer]")


def test_bbh_matches_case_free_and_flexible_finds_true_false():
    scores, _ = bbh_scores("false.", "False")
    assert scores["exact_match,strict-match"] == 1.0
    scores, _ = bbh_scores(" false.", "False")  # the harness keeps the leading space: no strict match
    assert scores["exact_match,strict-match"] == 0.0
    scores, extracted = bbh_scores(" Let me think. The result is True", "True")
    assert scores["exact_match,strict-match"] == 0.0 and extracted["flexible-extract"] == "True"
    assert scores["exact_match,flexible-extract"] == 1.0


def test_small_helpers():
    assert truncate_at("42\n\nQuestion: next", ["Question:", "\n\n"]) == "42"
    assert last_number("37 + 58 = 95.") == "95" and last_number("1,024 bytes") == "1024" and last_number("no") is None
    assert choice_letter("The answer is (C).", 4) == 2 and choice_letter("I think E", 4) is None
