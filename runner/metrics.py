"""GLUE metrics with scikit-learn and scipy (``evaluate`` fetches its scripts from the Hub).

The paper's metric per task: MCC for CoLA, Pearson for STS-B (Spearman recorded too), accuracy for
the others (F1 recorded too for MRPC and QQP).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

EXTRA = {"mrpc": ("f1",), "qqp": ("f1",), "stsb": ("spearman",)}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """Metrics of one GLUE task; ``predictions`` are class indices, or scores for STS-B."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task == "stsb":
        return {"pearson": float(pearsonr(predictions, labels)[0]),
                "spearman": float(spearmanr(predictions, labels)[0])}
    out = {"accuracy": float(accuracy_score(labels, predictions))}
    if task == "cola":
        out["mcc"] = float(matthews_corrcoef(labels, predictions))
    if "f1" in EXTRA.get(task, ()):
        out["f1"] = float(f1_score(labels, predictions))
    return out
