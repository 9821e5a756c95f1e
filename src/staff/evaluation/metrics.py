"""ROUGE-L (F-measure) and BLEU-4, the paper's two metrics, on the 0-100 scale.

* ROUGE-L: ``rouge-score``'s LCS F-measure per prediction, averaged over predictions. With
  several references a prediction takes its best one (``RougeScorer.score_multi``). Tokens are
  lower-cased runs of Unicode letters and digits: the library's default tokenizer keeps only
  [a-z0-9], which splits German words at every umlaut or ß ("weißen" -> "wei", "en"); on ASCII
  text the two agree (tested). No stemming (Porter stemming is English-only).
* BLEU-4: sacreBLEU corpus BLEU with its defaults (13a tokenisation, 'exp' smoothing, which
  only acts when an n-gram order has no match at all), all references of a sample used together
  (the reference length closest to the prediction's for the brevity penalty). The paper's
  reference code used sampling and character-level BLEU; we use greedy decoding and standard
  sacreBLEU, so the numbers are not comparable with the paper's in absolute terms.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")


class UnicodeTokenizer:
    """rouge-score tokenizer: lower-cased runs of Unicode letters/digits."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


def rouge_l(predictions: list[str], references: list[list[str]]) -> list[float]:
    """Per-prediction ROUGE-L F-measure x 100, against the best of its references."""
    from rouge_score import rouge_scorer

    _check(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())
    out = []
    for pred, refs in zip(predictions, references):
        score = scorer.score_multi(refs, pred) if len(refs) > 1 else scorer.score(refs[0], pred)
        out.append(100.0 * score["rougeL"].fmeasure)
    return out


def bleu4(predictions: list[str], references: list[list[str]]) -> tuple[float, str]:
    """sacreBLEU corpus BLEU-4 and its signature. Samples may have different numbers of
    references (missing ones are passed as None, which sacreBLEU skips)."""
    from sacrebleu.metrics import BLEU

    _check(predictions, references)
    width = max(len(r) for r in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    metric = BLEU()
    result = metric.corpus_score(predictions, streams)
    return float(result.score), str(metric.get_signature())


def score_predictions(predictions: list[str], references: list[list[str]]) -> dict:
    """{'rouge_l', 'bleu', 'length_ratio', 'n', 'per_sample_rouge_l', 'per_sample_words',
    'bleu_signature'}; per_sample_words: (words generated, mean words of the references)."""
    per_sample = rouge_l(predictions, references)
    bleu, signature = bleu4(predictions, references)
    words, ratio = length_ratio(predictions, references)
    return {"rouge_l": sum(per_sample) / len(per_sample), "bleu": bleu, "length_ratio": ratio,
            "n": len(predictions), "per_sample_rouge_l": per_sample, "per_sample_words": words,
            "bleu_signature": signature}


def length_ratio(predictions: list[str], references: list[list[str]]
                 ) -> tuple[list[tuple[int, float]], float]:
    """Per sample (words generated, mean words of its references), and words generated per
    reference word over the set (NaN when the references have no words)."""
    words = [(len(p.split()), sum(len(r.split()) for r in refs) / len(refs))
             for p, refs in zip(predictions, references)]
    reference_words = sum(r for _, r in words)
    ratio = sum(g for g, _ in words) / reference_words if reference_words else float("nan")
    return words, ratio


def _check(predictions: list[str], references: list[list[str]]) -> None:
    if not predictions:
        raise ValueError("no predictions to score.")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference "
                         "lists; need one list per prediction.")
    for i, refs in enumerate(references):
        if not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{i}] == {refs!r}, must be a non-empty list of strings.")
