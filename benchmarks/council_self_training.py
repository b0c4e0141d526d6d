"""Self-training on the council's unlabelled complaints, a candidate for issue 15's domain
adaptation (not adopted: the project's model does not do this).

For each random pool/test split of the made-up council set (as ``council_learning_curve.py``),
the model of ``train --add-public-data`` on N random pool labels is fitted; it tags every council
text whose label it was not given (the store's complaints, including the test part's texts but
never their labels); the tags at or above a confidence threshold are added as council rows and
the model is fitted again. Reports test accuracy (3 complaint themes) before and after, and the
paired difference per draw.

Writes benchmarks/results/council_self_training.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/council_self_training.py
    [--draws 10] [--sizes 0,100] [--thresholds 0.5,0.75]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from council_learning_curve import council_set, fit_with_public, score, split

from pipelines.config import Settings
from pipelines.taxonomy import Taxonomy
from pipelines.themes import tag
from pipelines.train import public_labelled

RESULTS = Path(__file__).parent / "results" / "council_self_training.json"


def self_trained(model, rows, council, taxonomy, settings, public, threshold):
    """Refit with the model's own confident tags on the texts it was not given labels for."""
    unlabelled = council.drop(rows.index)
    out = tag(model, unlabelled["text"], taxonomy.feedback_type_of(), unlabelled["feedback_type"].tolist())
    keep = out["theme_confidence"].to_numpy() >= threshold
    pseudo = unlabelled[keep].assign(theme=out["theme"].to_numpy()[keep], sub_theme="")
    return fit_with_public(pd.concat([rows, pseudo]), taxonomy, settings, public), int(keep.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--sizes", default="0,100", help="numbers of random council labels")
    parser.add_argument("--thresholds", default="0.5,0.75", help="confidence a tag needs to be used")
    args = parser.parse_args()
    settings = Settings()
    taxonomy = Taxonomy.from_file(settings.taxonomy_path)
    council, public = council_set(), public_labelled(settings)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    started, runs = time.monotonic(), []
    for draw in range(args.draws):
        pool, test = split(council, draw)
        for n in (int(s) for s in args.sizes.split(",")):
            rows = pool.sample(frac=1, random_state=1000 + draw).head(n)
            base = fit_with_public(rows, taxonomy, settings, public)
            run = {"draw": draw, "labels": n, "base": score(base, test, taxonomy)["accuracy"]}
            for threshold in thresholds:
                model, used = self_trained(base, rows, council, taxonomy, settings, public, threshold)
                run[f"self {threshold:g}"] = score(model, test, taxonomy)["accuracy"]
                run[f"pseudo rows {threshold:g}"] = used
            runs.append(run)
            print(run, flush=True)
    table = pd.DataFrame(runs)
    summary = {}
    for n, part in table.groupby("labels"):
        row = {"base_accuracy_mean": round(part["base"].mean(), 4)}
        for threshold in thresholds:
            diff = part[f"self {threshold:g}"] - part["base"]
            row[f"self {threshold:g}"] = {
                "accuracy_mean": round(part[f"self {threshold:g}"].mean(), 4),
                "paired_difference_mean": round(diff.mean(), 4),
                "paired_difference_se": round(diff.std(ddof=1) / np.sqrt(len(diff)), 4),
                "draws_better_same_worse": [int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())],
            }
        summary[str(n)] = row
    result = {"summary": summary, "runs": runs, "draws": args.draws, "seconds": round(time.monotonic() - started, 1),
              "test_complaints_per_draw": int((split(council, 0)[1]["feedback_type"] == "complaint").sum())}  # fmt: skip
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
