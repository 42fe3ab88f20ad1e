"""SQuAD 2.0: data, features with offsets, n-best post-processing, and the official evaluation.

The evaluation follows the official v2.0 script (normalisation, EM and token F1 as the maximum over
gold answers, HasAns/NoAns, best no-answer threshold); neither transformers 5 nor ``evaluate``
offline ships it.
"""

from __future__ import annotations

import collections
import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import DataError

# -- the official evaluation ----------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def token_f1(gold: str, prediction: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(prediction).split()
    if not gold_tokens or not pred_tokens:  # an empty side scores 1 only if both are empty
        return float(gold_tokens == pred_tokens)
    common = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_threshold(predictions: dict, scores: dict, na_scores: dict, has_answer: dict) -> tuple[float, float]:
    """The official search: predict "no answer" for every question whose no-answer score exceeds a
    threshold; returns the best total (in %) and that threshold."""
    current = best = sum(1 for q in scores if not has_answer[q])
    threshold = 0.0
    for qid in sorted(na_scores, key=lambda q: na_scores[q]):
        if qid not in scores:
            continue
        if has_answer[qid]:
            current += scores[qid]
        else:
            current += -1 if predictions[qid] else 0
        if current > best:
            best, threshold = current, na_scores[qid]
    return 100.0 * best / len(scores), threshold


def squad_v2_scores(examples: list[dict], predictions: dict[str, str], na_scores: dict[str, float] | None = None,
                    spans: dict[str, str] | None = None) -> dict[str, float]:
    """EM/F1 overall, on answerable (HasAns) and unanswerable (NoAns) questions, and (given no-answer
    scores) at the best no-answer threshold. ``examples``: dicts with ``id`` and ``answers`` (texts).
    The threshold search, as in the official script, cuts the best non-null spans (``spans``; by
    default the predictions themselves) by their no-answer score."""
    def raw_scores(preds):
        exact, f1, has_answer = {}, {}, {}
        for ex in examples:
            qid = ex["id"]
            golds = [a for a in ex["answers"] if normalize_answer(a)] or [""]
            has_answer[qid] = golds != [""]
            exact[qid] = max(exact_match(g, preds[qid]) for g in golds)
            f1[qid] = max(token_f1(g, preds[qid]) for g in golds)
        return exact, f1, has_answer

    exact, f1, has_answer = raw_scores(predictions)

    def mean(values, subset):
        chosen = [values[q] for q in subset]
        return 100.0 * sum(chosen) / len(chosen) if chosen else float("nan")

    has = [q for q in exact if has_answer[q]]
    no = [q for q in exact if not has_answer[q]]
    out = {"exact": mean(exact, exact), "f1": mean(f1, f1), "total": len(exact),
           "HasAns_exact": mean(exact, has), "HasAns_f1": mean(f1, has), "HasAns_total": len(has),
           "NoAns_exact": mean(exact, no), "NoAns_f1": mean(f1, no), "NoAns_total": len(no)}
    if na_scores is not None:
        spans = spans if spans is not None else predictions
        span_exact, span_f1, _ = raw_scores(spans)
        out["best_exact"], out["best_exact_thresh"] = best_threshold(spans, span_exact, na_scores, has_answer)
        out["best_f1"], out["best_f1_thresh"] = best_threshold(spans, span_f1, na_scores, has_answer)
    return out


# -- data -----------------------------------------------------------------------------------------


def read_squad_json(path: Path) -> list[dict]:
    """Flatten an official SQuAD 2.0 JSON file into examples; refuse anything else with a clear error."""
    try:
        data = json.loads(Path(path).read_text())
        examples = []
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = qa["answers"]
                    examples.append({"id": qa["id"], "title": article["title"], "context": context,
                                     "question": qa["question"], "answers": [a["text"] for a in answers],
                                     "answer_starts": [a["answer_start"] for a in answers]})
    except FileNotFoundError:
        raise DataError(f"missing SQuAD file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not an official SQuAD 2.0 JSON file (data -> paragraphs -> qas with "
                        f"id, question, answers[text, answer_start]): {type(e).__name__}: {e}") from None
    if not examples:
        raise DataError(f"{path} holds no questions")
    return examples


def split_by_article(examples: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """The offline protocol: a seeded split of the official dev set by article (no article in both)."""
    titles = sorted({ex["title"] for ex in examples})
    random.Random(seed).shuffle(titles)
    eval_titles = sorted(titles[:max(1, round(eval_fraction * len(titles)))])
    held = set(eval_titles)
    return [ex for ex in examples if ex["title"] not in held], [ex for ex in examples if ex["title"] in held], eval_titles


# -- features and post-processing -------------------------------------------------------------------


def train_features(examples, tokenizer, max_length: int, stride: int) -> list[dict]:
    """Windows over each context; the answer's token span, or the CLS token (0) when it lies outside."""
    enc = tokenizer([ex["question"] for ex in examples], [ex["context"] for ex in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    features = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        sequence_ids = enc.sequence_ids(i)
        start = end = 0
        if ex["answers"]:
            char_start = ex["answer_starts"][0]
            char_end = char_start + len(ex["answers"][0])
            context_tokens = [t for t, s in enumerate(sequence_ids) if s == 1]
            first, last = context_tokens[0], context_tokens[-1]
            if offsets[first][0] <= char_start and offsets[last][1] >= char_end:
                start = next(t for t in range(first, last + 1) if offsets[t][1] > char_start)
                end = next(t for t in range(last, first - 1, -1) if offsets[t][0] < char_end)
        feature = {k: enc[k][i] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        features.append({**feature, "start_positions": start, "end_positions": end})
    return features


@dataclass
class EvalFeatures:
    inputs: list[dict]  # what the model sees
    example_index: list[int]  # feature -> example
    offsets: list[list]  # per token (start, end) in the context, or None outside the context


def eval_features(examples, tokenizer, max_length: int, stride: int) -> EvalFeatures:
    enc = tokenizer([ex["question"] for ex in examples], [ex["context"] for ex in examples], truncation="only_second",
                    max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    inputs, offsets = [], []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        offsets.append([o if sequence_ids[t] == 1 else None for t, o in enumerate(enc["offset_mapping"][i])])
        inputs.append({k: enc[k][i] for k in enc if k not in ("offset_mapping", "overflow_to_sample_mapping")})
    return EvalFeatures(inputs, list(enc["overflow_to_sample_mapping"]), offsets)


def postprocess(examples, features: EvalFeatures, start_logits: np.ndarray, end_logits: np.ndarray,
                n_best: int = 20, max_answer_length: int = 30, null_threshold: float = 0.0):
    """One prediction per question: the best span over all its windows, or "" when the null score
    (CLS start + CLS end, lowest over windows) beats it by more than ``null_threshold``.
    Returns the predictions, the no-answer scores (null score minus best span score) and the best
    non-null span of every question (for the threshold search)."""
    by_example = collections.defaultdict(list)
    for f, e in enumerate(features.example_index):
        by_example[e].append(f)
    predictions, na_scores, spans = {}, {}, {}
    for e, ex in enumerate(examples):
        null_score, best_score, best_text = float("inf"), -float("inf"), ""
        for f in by_example[e]:
            starts, ends, offsets = start_logits[f], end_logits[f], features.offsets[f]
            null_score = min(null_score, starts[0] + ends[0])
            in_context = np.array([o is not None for o in offsets] + [False] * (len(starts) - len(offsets)))
            s, t = np.meshgrid(np.argsort(starts)[::-1][:n_best], np.argsort(ends)[::-1][:n_best], indexing="ij")
            valid = in_context[s] & in_context[t] & (t >= s) & (t - s + 1 <= max_answer_length)
            if valid.any():
                scores = np.where(valid, starts[s] + ends[t], -np.inf)
                i, j = np.unravel_index(np.argmax(scores), scores.shape)
                if scores[i, j] > best_score:
                    best_score = scores[i, j]
                    best_text = ex["context"][offsets[s[i, j]][0]:offsets[t[i, j]][1]]
        diff = null_score - best_score
        predictions[ex["id"]] = "" if diff > null_threshold else best_text
        na_scores[ex["id"]] = float(diff)
        spans[ex["id"]] = best_text
    return predictions, na_scores, spans


# -- generation (task squad_v2_gen) ---------------------------------------------------------------


def chat_prompt(tokenizer, instruction: str, context: str, question: str) -> list[int]:
    """The chat template's user turn (instruction, context, question) and the assistant's opening, as token ids."""
    messages = [{"role": "user", "content": f"{instruction}\n\nContext: {context}\n\nQuestion: {question}"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fitted_prompt(tokenizer, instruction: str, example: dict, room: int) -> tuple[list[int], str]:
    """The prompt of ``example`` within ``room`` tokens: its context cut (by tokens) as far as needed; and the
    context that remains."""
    overhead = len(chat_prompt(tokenizer, instruction, "", example["question"]))
    context_ids = tokenizer(example["context"], add_special_tokens=False)["input_ids"]
    context = example["context"] if overhead + len(context_ids) <= room else \
        tokenizer.decode(context_ids[:max(0, room - overhead)])
    return chat_prompt(tokenizer, instruction, context, example["question"]), context


def generation_features(examples: list[dict], tokenizer, instruction: str, no_answer: str, max_length: int) -> list[dict]:
    """Training features: prompt and target (the first gold answer, or ``no_answer``, then the end-of-turn token), with
    labels -100 on the prompt, so the loss reads the target only. An answerable question whose answer a cut context
    no longer holds is skipped."""
    features = []
    for ex in examples:
        target = tokenizer((ex["answers"][0] if ex["answers"] else no_answer), add_special_tokens=False)["input_ids"]
        target = target + [tokenizer.eos_token_id]
        prompt, context = fitted_prompt(tokenizer, instruction, ex, max_length - len(target))
        if ex["answers"] and ex["answers"][0] not in context:
            continue
        features.append({"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
                         "labels": [-100] * len(prompt) + target})
    return features


def read_generated(text: str, no_answer: str) -> str:
    """A generated answer as a SQuAD prediction: the no-answer phrase is the empty answer."""
    answer = text.strip()
    return "" if normalize_answer(answer) == normalize_answer(no_answer) else answer
