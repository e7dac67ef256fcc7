"""BLEU, ROUGE-L and chrF of generated text against references; Chinese is segmented into words with jieba."""

from __future__ import annotations

import re

from tunestack.errors import MissingExtraError

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_chinese(text: str) -> bool:
    return _CJK.search(text) is not None


def words(text: str) -> list[str]:
    """Word tokens: jieba's segmentation where the text has Chinese, lower-cased word characters otherwise."""
    if has_chinese(text):
        try:
            import jieba
        except ImportError:
            raise MissingExtraError("jieba", "eval", "Scoring Chinese text") from None
        jieba.setLogLevel(60)
        return [w for w in jieba.lcut(text.lower()) if w.strip() and re.search(r"\w", w)]
    return re.findall(r"\w+", text.lower())


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise MissingExtraError("sacrebleu", "eval", "BLEU and chrF scoring") from None
    return sacrebleu


def sentence_scores(prediction: str, reference: str) -> dict[str, float]:
    """Per-answer BLEU, ROUGE-L F1 and chrF (0-100), for the samples file."""
    sacrebleu = _sacrebleu()
    hyp, ref = " ".join(words(prediction)), " ".join(words(reference))
    return {"bleu": sacrebleu.sentence_bleu(hyp, [ref], tokenize="none").score,
            "rouge_l": 100 * rouge_l(words(prediction), words(reference)),
            "chrf": sacrebleu.sentence_chrf(prediction, [reference]).score}


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU (on segmented words), mean ROUGE-L F1 and corpus chrF, each 0-100."""
    sacrebleu = _sacrebleu()
    hyps = [" ".join(words(p)) for p in predictions]
    refs = [" ".join(words(r)) for r in references]
    rouge = [rouge_l(words(p), words(r)) for p, r in zip(predictions, references)]
    return {"bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score,
            "rouge_l": 100 * sum(rouge) / max(len(rouge), 1),
            "chrf": sacrebleu.corpus_chrf(predictions, [references]).score}


def rouge_l(prediction: list[str], reference: list[str]) -> float:
    """ROUGE-L F1 of two token lists: their longest common subsequence against each one's length."""
    if not prediction or not reference:
        return 0.0
    previous = [0] * (len(reference) + 1)
    for token in prediction:
        current = [0]
        for j, ref_token in enumerate(reference, 1):
            current.append(previous[j - 1] + 1 if token == ref_token else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(prediction), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)
