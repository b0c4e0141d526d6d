"""Theme classifier accuracy on the public data, side by side with the pxtextmining baseline.

Writes benchmarks/results/theme_accuracy.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/theme_accuracy.py [--skip-baseline]

Measures (issue 2):
  * FFT phase 1, 9 major themes, stratified 80/20 split (random_state=42) after dropping empty feedback;
  * cross-organisation: train on Trust A + Trust B, test on Trust C;
  * FFT v6 (NEAS), multi-label on labels with >= 10 training positives, random 80/20 (random_state=42);
  * the share of test texts that occur verbatim in training, and macro-F1 on the unseen ones.
Single-label models learn the 9 themes and, as sub-themes, the FFT sub-category codes of the
training rows (``ThemeClassifier.fit(sub_labels=...)``); the themes-only figure is reported too.
Fits use 2 processes (the machine's cores).
Baseline: NHS pxtextmining's best classical configuration, TfidfVectorizer() + SVC(C=15,
class_weight='balanced', probability=True) (wrapped in MultiOutputClassifier for multi-label).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline as sk_make_pipeline
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import SVC

from pipelines.datasets import fetch_fft_phase1, fetch_fft_v6
from pipelines.themes import make_pipeline, tag

RESULTS = Path(__file__).parent / "results" / "theme_accuracy.json"


def baseline():
    return sk_make_pipeline(TfidfVectorizer(), SVC(C=15, class_weight="balanced", probability=True, random_state=42))


def single_label(train: pd.DataFrame, test: pd.DataFrame, run_baseline: bool) -> dict:
    started = time.monotonic()
    ours = make_pipeline(n_jobs=2).fit(
        train["feedback"], train["label"], classifier__sub_labels=train["code"].to_numpy()
    )
    fit_seconds = time.monotonic() - started
    predicted = tag(ours, test["feedback"])["theme"].to_numpy()
    themes_only = tag(make_pipeline(n_jobs=2).fit(train["feedback"], train["label"]), test["feedback"])["theme"]
    seen = test["feedback"].str.strip().str.lower().isin(set(train["feedback"].str.strip().str.lower())).to_numpy()
    result = {
        "n_train": len(train),
        "n_test": len(test),
        "macro_f1": f1_score(test["label"], predicted, average="macro"),
        "micro_f1": f1_score(test["label"], predicted, average="micro"),
        "per_theme_f1": dict(
            zip(
                sorted(test["label"].unique()),
                f1_score(test["label"], predicted, average=None, labels=sorted(test["label"].unique()))
                .round(4)
                .tolist(),
            )
        ),
        "share_test_verbatim_in_train": float(seen.mean()),
        "macro_f1_unseen_texts": f1_score(test["label"][~seen], predicted[~seen], average="macro"),
        "fit_seconds": fit_seconds,
        "sub_themes_learned": len(ours.named_steps["classifier"].sub_classes_),
        "macro_f1_themes_only": f1_score(test["label"], themes_only, average="macro"),
    }
    if run_baseline:
        started = time.monotonic()
        base = baseline().fit(train["feedback"], train["label"])
        result["baseline_fit_seconds"] = time.monotonic() - started
        base_pred = base.predict(test["feedback"])
        result["baseline_macro_f1"] = f1_score(test["label"], base_pred, average="macro")
        result["baseline_macro_f1_unseen_texts"] = f1_score(test["label"][~seen], base_pred[~seen], average="macro")
    return result


def multi_label(run_baseline: bool) -> dict:
    v6 = fetch_fft_v6()
    train, test = train_test_split(v6, test_size=0.2, random_state=42)
    counts = pd.Series([t for v in train["labels"] for t in v.split(";")]).value_counts()
    keep = sorted(counts[counts >= 10].index)

    def restrict(labels: pd.Series) -> pd.Series:
        return labels.map(lambda v: ";".join(t for t in v.split(";") if t in keep))

    train = train.assign(labels=restrict(train["labels"]))
    test = test.assign(labels=restrict(test["labels"]))
    train = train[train["labels"] != ""]
    binarizer = MultiLabelBinarizer(classes=keep)
    y_test = binarizer.fit_transform(test["labels"].map(lambda v: [t for t in v.split(";") if t]))
    started = time.monotonic()
    ours = make_pipeline(multi_label=True, n_jobs=2).fit(train["text"], train["labels"])
    fit_seconds = time.monotonic() - started
    y_ours = binarizer.transform(tag(ours, test["text"])["themes"].str.split(";"))
    result = {
        "n_labels": len(keep),
        "n_train": len(train),
        "n_test": len(test),
        "macro_f1": f1_score(y_test, y_ours, average="macro", zero_division=0),
        "micro_f1": f1_score(y_test, y_ours, average="micro", zero_division=0),
        "fit_seconds": fit_seconds,
    }
    if run_baseline:
        y_train = binarizer.transform(train["labels"].str.split(";"))
        started = time.monotonic()
        base = sk_make_pipeline(
            TfidfVectorizer(),
            MultiOutputClassifier(SVC(C=15, class_weight="balanced", probability=True, random_state=42), n_jobs=2),
        ).fit(train["text"], y_train)
        result["baseline_fit_seconds"] = time.monotonic() - started
        y_base = base.predict(test["text"])
        result["baseline_macro_f1"] = f1_score(y_test, y_base, average="macro", zero_division=0)
        result["baseline_micro_f1"] = f1_score(y_test, y_base, average="micro", zero_division=0)
        result["macro_f1_gain_over_baseline"] = result["macro_f1"] - result["baseline_macro_f1"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-baseline", action="store_true", help="Only our model (the baseline SVC takes minutes).")
    args = parser.parse_args()
    fft = fetch_fft_phase1()
    train, test = train_test_split(fft, test_size=0.2, stratify=fft["label"], random_state=42)
    results = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "fft_phase1_9_themes": single_label(train, test, not args.skip_baseline),
    }
    print(json.dumps(results["fft_phase1_9_themes"], indent=1, default=float), flush=True)
    cross = fft["organization"] == "Trust C"
    results["cross_organisation_AB_to_C"] = single_label(fft[~cross], fft[cross], not args.skip_baseline)
    print(json.dumps(results["cross_organisation_AB_to_C"], indent=1, default=float), flush=True)
    results["fft_v6_multi_label"] = multi_label(not args.skip_baseline)
    print(json.dumps(results["fft_v6_multi_label"], indent=1, default=float), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=lambda v: float(np.round(v, 6))))
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
