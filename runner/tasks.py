"""A task, as the loop sees it: a training set, an evaluation, and the model head it needs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from . import squad
from .data import DataError, Features, encode_split, eval_loader, hold_out, load_glue
from .distributed import Replicas
from .metrics import glue_metrics
from .models import hub_reachable
from .settings import ConfigError


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _device(model) -> torch.device:
    return next(model.parameters()).device


class GlueTask:
    """A GLUE task. With ``validation_fraction`` > 0, that share of the training set (seeded by ``validation_seed``,
    stratified by label) is held out as the ``validation`` split, evaluated beside dev and never trained on."""

    head = "classification"

    def __init__(self, task_cfg, data_dir, tokenizer, eval_batch_size: int, validation_fraction: float = 0.0,
                 validation_seed: int = 0, eval_by_length: bool = False):
        self.cfg = task_cfg
        splits, self.source = load_glue(task_cfg, data_dir)
        self.num_labels = 1 if task_cfg.labels is None else len(task_cfg.labels)
        self.protocol = {}
        eval_names = list(task_cfg.eval_files)
        if validation_fraction:
            splits["train"], splits["validation"], rows = hold_out(splits["train"], validation_fraction,
                                                                   validation_seed, stratify=self.num_labels > 1)
            eval_names.append("validation")
            self.protocol["validation"] = {"fraction": validation_fraction, "seed": validation_seed,
                                           "examples": len(rows), "train_examples": len(splits["train"]),
                                           "rows": rows}  # indices into the official train file's data rows
        self.train_set = encode_split(splits["train"], tokenizer, task_cfg.max_seq_length)
        self.eval_loaders = {name: eval_loader(encode_split(splits[name], tokenizer, task_cfg.max_seq_length),
                                               tokenizer, eval_batch_size, eval_by_length) for name in eval_names}
        self.eval_sizes = {name: len(loader.dataset) for name, loader in self.eval_loaders.items()}
        headline = splits[next(iter(task_cfg.eval_files))].labels
        self.majority_baseline = None if self.num_labels == 1 else glue_metrics(
            task_cfg.name, [max(set(headline), key=headline.count)] * len(headline), headline)[task_cfg.metric]

    @torch.no_grad()
    def evaluate(self, model, replicas: Replicas = Replicas()) -> dict[str, dict[str, float]]:
        """Metrics per eval split; batches are spread over the replicas and gathered."""
        device = _device(model)

        def predict(batch):
            logits = model(**to_device({k: v for k, v in batch.items() if k != "labels"}, device)).logits.cpu()
            return logits.squeeze(-1) if self.num_labels == 1 else logits.argmax(-1), batch["labels"]

        out = {}
        for split, loader in self.eval_loaders.items():
            predictions, labels = zip(*replicas.map_batches(loader, predict))
            out[split] = glue_metrics(self.cfg.name, torch.cat(predictions).numpy(), torch.cat(labels).numpy())
        return out


class SquadTask:
    """SQuAD 2.0. Data: the official train/dev JSON under data.dir/squad_v2, else the Hub, else (only the
    dev file present) the offline protocol: the official dev set split by article, seeded."""

    head = "question_answering"
    num_labels = 2
    majority_baseline = None  # its floor is the protocol's all_empty_baseline

    def __init__(self, task_cfg, data_dir, tokenizer, eval_batch_size: int):
        self.cfg = task_cfg
        folder = Path(data_dir) / "squad_v2"
        train_file, dev_file = folder / task_cfg.train_file, folder / task_cfg.dev_file
        self.protocol = {"name": "official"}
        if train_file.is_file() and dev_file.is_file():
            train, dev, self.source = squad.read_squad_json(train_file), squad.read_squad_json(dev_file), str(folder)
        elif dev_file.is_file():
            split = task_cfg.dev_split
            train, dev, held_out = squad.split_by_article(squad.read_squad_json(dev_file), split.eval_fraction, split.seed)
            self.source = f"{dev_file} (dev-split protocol)"
            self.protocol = {"name": "dev_split", "note": "trained and evaluated on disjoint articles of the official "
                             "dev set; not comparable to the paper's Table IV", "eval_articles": held_out,
                             "train_questions": len(train), "eval_questions": len(dev), **dict(split)}
        elif hub_reachable():
            train, dev, self.source = self._from_hub(task_cfg.hub)
        else:
            raise DataError(f"SQuAD 2.0: no {dev_file} and the Hugging Face Hub cannot be reached")
        self.examples = dev
        no_answer = sum(1 for ex in dev if not ex["answers"])
        self.protocol["all_empty_baseline"] = 100.0 * no_answer / len(dev)  # EM = F1 of predicting "" everywhere
        self.train_set = Features(squad.train_features(train, tokenizer, task_cfg.max_seq_length, task_cfg.doc_stride))
        self.features = squad.eval_features(dev, tokenizer, task_cfg.max_seq_length, task_cfg.doc_stride)
        self.loader = eval_loader(Features(self.features.inputs), tokenizer, eval_batch_size)
        self.eval_sizes = {"dev": len(dev)}

    @staticmethod
    def _from_hub(hub_cfg):
        import datasets

        data = datasets.load_dataset(hub_cfg.path)

        def convert(part):
            return [{"id": r["id"], "title": r["title"], "context": r["context"], "question": r["question"],
                     "answers": list(r["answers"]["text"]), "answer_starts": list(r["answers"]["answer_start"])}
                    for r in part]

        return convert(data["train"]), convert(data["validation"]), f"hub:{hub_cfg.path}"

    @torch.no_grad()
    def evaluate(self, model, replicas: Replicas = Replicas()) -> dict[str, dict[str, float]]:
        """EM/F1 on the dev examples; batches are spread over the replicas and gathered."""
        device = _device(model)

        def logits(batch):
            out = model(**to_device(batch, device))
            return out.start_logits.cpu(), out.end_logits.cpu()

        starts, ends = zip(*replicas.map_batches(self.loader, logits))
        width = max(s.shape[1] for s in starts)  # batches are padded to different lengths
        pad = lambda t: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=-1e4).numpy()  # noqa: E731
        start_logits = np.concatenate([pad(s) for s in starts])
        end_logits = np.concatenate([pad(e) for e in ends])
        predictions, na_scores, spans = squad.postprocess(self.examples, self.features, start_logits, end_logits,
                                                   self.cfg.n_best, self.cfg.max_answer_length, self.cfg.null_threshold)
        return {"dev": squad.squad_v2_scores(self.examples, predictions, na_scores, spans)}


class SquadGenerationTask:
    """SQuAD 2.0 as generation for a decoder (conf/task/squad_v2_gen.yaml): the official dev set split by article as
    squad_v2's dev-split protocol, seeded subsets of the training and evaluation questions, answer-only loss, greedy
    generation scored by the official EM/F1."""

    head = "causal_lm"
    num_labels = None
    majority_baseline = None

    def __init__(self, task_cfg, data_dir, tokenizer, eval_batch_size: int):
        from transformers import DataCollatorForSeq2Seq

        self.cfg, self.tokenizer = task_cfg, tokenizer
        dev_file = Path(data_dir) / "squad_v2" / task_cfg.dev_file
        if not dev_file.is_file():
            raise DataError(f"task squad_v2_gen: no {dev_file} (the official SQuAD 2.0 dev file)")
        split = task_cfg.dev_split
        train, held, titles = squad.split_by_article(squad.read_squad_json(dev_file), split.eval_fraction, split.seed)
        rng = random.Random(task_cfg.subset_seed)
        train = rng.sample(train, min(task_cfg.train_questions, len(train)))
        self.examples = sorted(rng.sample(held, min(task_cfg.eval_questions, len(held))), key=lambda ex: ex["id"])
        features = squad.generation_features(train, tokenizer, task_cfg.instruction, task_cfg.no_answer,
                                              task_cfg.max_seq_length)
        self.train_set = Features(features)
        self.collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)
        room = task_cfg.max_seq_length - task_cfg.max_new_tokens
        self.prompts = [squad.fitted_prompt(tokenizer, task_cfg.instruction, ex, room)[0] for ex in self.examples]
        no_answer = sum(1 for ex in self.examples if not ex["answers"])
        self.source = f"{dev_file} (dev-split protocol, generation)"
        self.protocol = {"name": "dev_split_generation", "eval_articles": titles, "train_questions": len(train),
                         "train_features": len(features), "eval_questions": len(self.examples),
                         "all_empty_baseline": 100.0 * no_answer / len(self.examples), **dict(split),
                         "note": "trained and evaluated on disjoint articles of the official dev set, by generation; "
                                 "not comparable to the paper's Table IV"}
        self.eval_sizes = {"dev": len(self.examples)}

    @torch.no_grad()
    def generate(self, model, prompts: list[list[int]]) -> list[str]:
        """Greedy answers to ``prompts`` (token ids), in batches padded on the left, each cut at the end-of-turn."""
        generator = model if hasattr(model, "generate") else model.model  # TriAdaptModel wraps the HF model in place
        eos, answers = self.tokenizer.eos_token_id, []
        for start in range(0, len(prompts), self.cfg.generation_batch_size):
            batch = self.tokenizer.pad({"input_ids": prompts[start:start + self.cfg.generation_batch_size]},
                                       padding_side="left", return_tensors="pt")
            batch = to_device(batch, _device(model))
            out = generator.generate(**batch, max_new_tokens=self.cfg.max_new_tokens, do_sample=False,
                                     eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id)
            answers += self.tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return answers

    def evaluate(self, model, replicas: Replicas = Replicas()) -> dict[str, dict[str, float]]:
        answers = self.generate(model, self.prompts)
        predictions = {ex["id"]: squad.read_generated(a, self.cfg.no_answer) for ex, a in zip(self.examples, answers)}
        return {"dev": squad.squad_v2_scores(self.examples, predictions)}


def build_task(task_cfg, data_dir, tokenizer, eval_batch_size: int, validation_fraction: float = 0.0,
               validation_seed: int = 0, eval_by_length: bool = False):
    if task_cfg.kind == "glue":
        return GlueTask(task_cfg, data_dir, tokenizer, eval_batch_size, validation_fraction, validation_seed,
                        eval_by_length)
    if validation_fraction:
        raise ConfigError(f"train.validation_fraction={validation_fraction}: a held-out validation split is made for "
                          f"GLUE tasks only; task {task_cfg.name} ({task_cfg.kind}) takes 0")
    if task_cfg.kind == "squad_v2":
        return SquadTask(task_cfg, data_dir, tokenizer, eval_batch_size)
    if task_cfg.kind == "squad_v2_gen":
        return SquadGenerationTask(task_cfg, data_dir, tokenizer, eval_batch_size)
    raise ValueError(f"task.kind={task_cfg.kind!r}; valid: glue, squad_v2, squad_v2_gen")
