"""GLUE data: the official TSV layout from a local directory, or the Hub through ``datasets``.

GLUE TSVs contain bare quote characters, so they are read with quoting off
(``csv.QUOTE_NONE``) and without NA guessing; otherwise RTE, MRPC and STS-B are corrupted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

from .models import hub_reachable


class DataError(ValueError):
    """Bad or missing data: the message names the file and what was expected."""


@dataclass
class Split:
    text_a: list[str]
    text_b: list[str] | None
    labels: list  # int class indices, or floats for regression

    def __len__(self) -> int:
        return len(self.labels)


def read_glue_tsv(path: Path, task_cfg) -> Split:
    """One split of a GLUE task in the official layout, validated."""
    if not path.is_file():
        raise DataError(f"missing GLUE file {path} (task {task_cfg.name}); expected the official GLUE layout")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    header = None if task_cfg.columns is None else list(task_cfg.columns)
    try:
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False, dtype=str,
                            encoding="utf-8-sig", names=header, header=0 if header is None else None)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a well-formed tab-separated GLUE file ({e})") from None
    needed = [*task_cfg.text_columns, task_cfg.label_column]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(frame.columns)[:12]}; "
                        f"task {task_cfg.name} needs {needed} (is the delimiter a tab?)")
    if len(frame) == 0:
        raise DataError(f"{path}: the split is empty")
    fields = frame[needed]
    short = frame.index[(fields.isna() | fields.apply(lambda column: column.str.strip() == "")).any(axis=1)]
    if len(short):  # fewer fields than the header (a file cut off mid-line) or an empty text or label
        raise DataError(f"{path}: {len(short)} row(s) with a missing or empty field, the first at data row "
                        f"{short[0] + 1} (a truncated file?)")
    raw_labels = frame[task_cfg.label_column].tolist()
    if task_cfg.labels is None:
        try:
            labels = [float(v) for v in raw_labels]
        except ValueError as e:
            raise DataError(f"{path}: a {task_cfg.label_column} value is not a number ({e})") from None
    else:
        index = {v: i for i, v in enumerate(task_cfg.labels)}
        bad = sorted({v for v in raw_labels if v not in index})
        if bad:
            raise DataError(f"{path}: label(s) {bad[:5]} outside the label set {list(task_cfg.labels)} "
                            f"of task {task_cfg.name} (truncated line or wrong file?)")
        labels = [index[v] for v in raw_labels]
    texts = [frame[c].tolist() for c in task_cfg.text_columns]
    return Split(texts[0], texts[1] if len(texts) > 1 else None, labels)


def hold_out(split: Split, fraction: float, seed: int, stratify: bool) -> tuple[Split, Split, list[int]]:
    """Carve a seeded validation split from a training split: (training rest, validation, the validation rows'
    indices in the original split, sorted). Stratified by label for classification, so both parts keep the class
    balance. Every choice (learning rate, checkpoint) is made on it; the GLUE dev set stays untouched."""
    from sklearn.model_selection import train_test_split

    rows = list(range(len(split)))
    kept, held = train_test_split(rows, test_size=fraction, random_state=seed,
                                  stratify=split.labels if stratify else None)

    def take(indices):
        return Split([split.text_a[i] for i in indices], None if split.text_b is None else
                     [split.text_b[i] for i in indices], [split.labels[i] for i in indices])

    kept, held = sorted(kept), sorted(held)
    return take(kept), take(held), held


def _from_hub(task_cfg) -> dict[str, Split]:
    import datasets

    hub = task_cfg.hub
    data = datasets.load_dataset(hub.path, hub.name)
    split_names = {"train": "train", **dict(hub.eval_splits)}
    out = {}
    for ours, theirs in split_names.items():
        part = data[theirs]
        texts = [list(part[c]) for c in hub.text_columns]
        out[ours] = Split(texts[0], texts[1] if len(texts) > 1 else None, list(part["label"]))
    return out


def load_glue(task_cfg, data_dir: str | Path) -> tuple[dict[str, Split], str]:
    """Train and eval splits, and where they came from. Local files win; else the Hub."""
    task_dir = Path(data_dir) / "glue" / task_cfg.glue_dir
    if not task_dir.is_dir():
        task_dir = Path(data_dir) / task_cfg.glue_dir  # data.dir may point at the glue folder itself
    if task_dir.is_dir():
        files = {"train": task_cfg.train_file, **dict(task_cfg.eval_files)}
        return {split: read_glue_tsv(task_dir / name, task_cfg) for split, name in files.items()}, str(task_dir)
    if not hub_reachable():
        raise DataError(
            f"GLUE task {task_cfg.name}: no local copy at {Path(data_dir) / 'glue' / task_cfg.glue_dir} "
            f"and the Hugging Face Hub cannot be reached. Put the official GLUE files there, or point "
            f"data.dir (env TRIADAPT_DATA_DIR) at a folder holding glue/{task_cfg.glue_dir}/.")
    return _from_hub(task_cfg), f"hub:{task_cfg.hub.path}/{task_cfg.hub.name}"


class Features(Dataset):
    """Tokenized examples as dicts (not padded; the collator pads per batch)."""

    def __init__(self, items: list[dict]):
        self.items = items
        self.lengths = [len(item["input_ids"]) for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def encode_split(split: Split, tokenizer, max_length: int) -> Features:
    """Tokenize a GLUE split, truncated to the task's max length."""
    args = (split.text_a,) if split.text_b is None else (split.text_a, split.text_b)
    encodings = tokenizer(*args, truncation=True, max_length=max_length)
    return Features([{**{k: v[i] for k, v in encodings.items()}, "labels": label}
                     for i, label in enumerate(split.labels)])


def train_loader(dataset: Features, tokenizer, batch_size: int, seed: int, epoch: int,
                 group_by_length: bool, collator=None) -> DataLoader:
    """One epoch of shuffled batches, padded per batch (by ``collator``, default: inputs only); the order depends only
    on (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 10_000 + epoch)
    if group_by_length:
        sampler = LengthGroupedSampler(batch_size, lengths=dataset.lengths, generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
    # The loader's own generator keeps it from drawing on the global RNG (which drives dropout).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator or DataCollatorWithPadding(tokenizer),
                      generator=torch.Generator().manual_seed(seed))


def eval_loader(dataset: Features, tokenizer, batch_size: int, by_length: bool = False) -> DataLoader:
    """Evaluation batches in file order, or (``by_length``) longest first, which pads far less; the metrics take
    predictions with their labels, so the order changes nothing but the last bits of the logits."""
    if by_length:
        dataset = Features(sorted(dataset.items, key=lambda item: -len(item["input_ids"])))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=DataCollatorWithPadding(tokenizer))
