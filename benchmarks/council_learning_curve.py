"""Council learning curve: how good the theme model is on council-style complaints with 0, 25,
50, 100 and 200 of the council's own labels, chosen at random or in review-queue order, with
the public data and the taxonomy's examples underneath or the council rows alone.

Writes benchmarks/results/council_learning_curve.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/council_learning_curve.py
    [--draws 5]
The council weight (settings.council_weight) was chosen with:
    ... council_learning_curve.py --draws 3 --weights 3,10,30 --sizes 25,100,200 --orders random
        --output benchmarks/results/council_weight_choice.json
and the example weight (settings.example_weight) checked with, for W in 3 and 30:
    ... council_learning_curve.py --example-weight W --sizes 100 --orders random
        --output benchmarks/results/council_example_weight_W.json

The council set (benchmarks/data/council_complaints_madeup.csv) is MADE UP by the project,
written apart from the taxonomy's examples and data/sample/: it stands in for complaints of
a council the model has never seen. It is four writers' idea of many voices (writer sets 1,
A, B, C; benchmarks/data/README.md), so it can show whether the method learns from a
council's labels and in what order to label; it cannot prove accuracy on real council text.
Each draw splits it at random into a pool (200 complaints) and a test part (the other
complaints and all compliments). Accuracy is the substantive theme of the test complaints (3
themes), with the export's feedback type given, as the nightly run scores them, overall and
per writer set; macro-F1 is over those 3 themes.

"Review-queue order" labels the pool in the order ``cli.py review export`` lists it, from
the cold-start model's scores (:func:`pipelines.corrections.teaching_order`).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import f1_score

from pipelines.config import Settings
from pipelines.corrections import teaching_order
from pipelines.taxonomy import Taxonomy
from pipelines.themes import make_pipeline, tag
from pipelines.train import LabelledData, _fit_params, public_labelled, with_training_sources

COUNCIL_SET = Path(__file__).parent / "data" / "council_complaints_madeup.csv"
RESULTS = Path(__file__).parent / "results" / "council_learning_curve.json"
SIZES = [0, 25, 50, 100, 200]
POOL = 200
COMPLAINT_THEMES = ["communication", "process_not_followed", "quality_of_service"]


def council_set() -> pd.DataFrame:
    return pd.read_csv(COUNCIL_SET, dtype=str, keep_default_na=False)


def split(council: pd.DataFrame, draw: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pool of complaints, test part) for one random draw."""
    complaints = council[council["feedback_type"] == "complaint"]
    pool = complaints.sample(POOL, random_state=draw)
    return pool, council.drop(pool.index)


def labelled(rows: pd.DataFrame, taxonomy: Taxonomy) -> LabelledData:
    """Council rows as the trainer reads them: themes, with sub-themes where given."""
    sub = rows["sub_theme"].where(rows["sub_theme"] != "", rows["theme"])
    return LabelledData(
        texts=rows["text"].reset_index(drop=True),
        labels=rows["theme"].reset_index(drop=True),
        multi_label=False,
        feedback_types=taxonomy.feedback_type_of(),
        taxonomy=taxonomy,
        sub_labels=sub.reset_index(drop=True),
    )


def fit(data: LabelledData):
    pipeline = make_pipeline(n_jobs=2)
    return pipeline.fit(data.texts, data.labels, **_fit_params(data.sub_labels, weights=data.weights))


def fit_with_public(rows: pd.DataFrame, taxonomy: Taxonomy, settings: Settings, public: LabelledData):
    """What ``train --add-public-data`` fits: the council rows, the public data, the examples."""
    if rows.empty:  # cold start: the default model (public data and examples)
        return fit(with_training_sources(public, settings))
    data = with_training_sources(labelled(rows, taxonomy), settings, add_public_data=True)
    return fit(data)


def fit_alone(rows: pd.DataFrame, taxonomy: Taxonomy):
    data = labelled(rows, taxonomy)
    if data.labels.value_counts().min() < 2 or data.labels.nunique() < 2:
        return None
    return fit(data)


def writer_set(ids: pd.Series) -> pd.Series:
    """Which set of writers a row comes from: "1" (MADEUP-001...) or "A"/"B"/"C" (MADEUP-A-001...)."""
    return ids.str.extract(r"^MADEUP-([A-Z])-", expand=False).fillna("1")


def score(model, test: pd.DataFrame, taxonomy: Taxonomy) -> dict:
    complaints = test[test["feedback_type"] == "complaint"]
    out = tag(model, complaints["text"], taxonomy.feedback_type_of(), complaints["feedback_type"].tolist())
    truth, predicted = complaints["theme"].to_numpy(), out["theme"].to_numpy()
    right = pd.Series(truth == predicted).groupby(writer_set(complaints["id"]).to_numpy()).mean()
    return {
        "accuracy": float((truth == predicted).mean()),
        "macro_f1": float(f1_score(truth, predicted, labels=COMPLAINT_THEMES, average="macro", zero_division=0)),
        **{f"accuracy_set_{name}": float(value) for name, value in right.items()},
    }


def queue_order(cold, pool: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """The pool in review-queue order, from the cold-start model's tags."""
    out = tag(cold, pool["text"], taxonomy.feedback_type_of(), pool["feedback_type"].tolist())
    order = teaching_order(
        pool["text"].tolist(), out["theme_confidence"].to_numpy(), out["theme"].to_numpy(), pool["service"].to_numpy()
    )
    return pool.iloc[order]


def summarise(runs: list[dict]) -> dict:
    table = pd.DataFrame(runs)
    grouped = table.groupby(["training", "order", "labels"])
    summary = grouped[["accuracy", "macro_f1"]].agg(["mean", "std"]).round(4)
    by_set = grouped[sorted(c for c in table.columns if c.startswith("accuracy_set_"))].mean().round(4)
    return {
        f"{training} | {order} | {labels}": {
            "accuracy_mean": row[("accuracy", "mean")],
            "accuracy_std": row[("accuracy", "std")],
            "macro_f1_mean": row[("macro_f1", "mean")],
            "macro_f1_std": row[("macro_f1", "std")],
            "draws": int(grouped.size()[(training, order, labels)]),
            "accuracy_mean_by_writer_set": by_set.loc[(training, order, labels)].dropna().to_dict(),
        }
        for (training, order, labels), row in summary.iterrows()
    }


def run_draw(draw, council, taxonomy, settings, public, cold, weights, sizes, orders) -> list[dict]:
    pool, test = split(council, draw)
    runs = [{"training": "public+examples", "order": "-", "labels": 0, "draw": draw, **score(cold, test, taxonomy)}]
    ranked_by = {"random": lambda: pool.sample(frac=1, random_state=1000 + draw),
                 "review queue": lambda: queue_order(cold, pool, taxonomy)}  # fmt: skip
    for order in orders:
        ranked = ranked_by[order]()
        for n in sizes:
            if order == "review queue" and n == POOL:
                continue  # the whole pool: the same rows as random order
            rows = ranked.head(n)
            for weight in weights:
                tuned = settings.model_copy(update={"council_weight": weight})
                model = fit_with_public(rows, taxonomy, tuned, public)
                name = "public+examples+council" + ("" if len(weights) == 1 else f" (council_weight {weight:g})")
                runs.append(
                    {"training": name, "order": order, "labels": n, "draw": draw, **score(model, test, taxonomy)}
                )
            alone = fit_alone(rows, taxonomy)
            if alone is not None:
                runs.append({"training": "council rows alone", "order": order, "labels": n, "draw": draw,
                             **score(alone, test, taxonomy)})  # fmt: skip
        print(f"draw {draw}: {order} done", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument(
        "--weights", default="", help="council weights to compare, e.g. 1,3,10,30 (default: the setting)"
    )
    parser.add_argument("--example-weight", type=float, help="weight of each taxonomy example (default: the setting)")
    parser.add_argument("--sizes", default="25,50,100,200", help="numbers of council labels (0 is always measured)")
    parser.add_argument("--orders", default="random,review queue")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--first-draw", type=int, default=0, help="run draws first..first+draws-1 (to split a run)")
    parser.add_argument("--merge", type=Path, nargs="*", help="combine these partial result files into --output")
    args = parser.parse_args()
    if args.merge:
        return merge(args.merge, args.output)
    sizes = [int(n) for n in args.sizes.split(",")]
    orders = args.orders.split(",")
    settings = Settings()
    if args.example_weight is not None:
        settings = settings.model_copy(update={"example_weight": args.example_weight})
    weights = [float(w) for w in args.weights.split(",") if w] or [settings.council_weight]
    taxonomy = Taxonomy.from_file(settings.taxonomy_path)
    council = council_set()
    started = time.monotonic()
    public = public_labelled(settings)
    cold = fit_with_public(council.head(0), taxonomy, settings, public)
    runs = []
    for draw in range(args.first_draw, args.first_draw + args.draws):
        runs.extend(run_draw(draw, council, taxonomy, settings, public, cold, weights, sizes, orders))
    result = {
        "council_set": {
            "file": COUNCIL_SET.name,
            "rows": len(council),
            "per_theme": council["theme"].value_counts().to_dict(),
            "complaints_per_writer_set": writer_set(council.loc[council["feedback_type"] == "complaint", "id"])
            .value_counts()
            .sort_index()
            .to_dict(),
            "made_up": True,
        },  # fmt: skip
        "pool_complaints": POOL,
        "draws": args.draws,
        "council_weights": weights,
        "example_weight": settings.example_weight,
        "summary": summarise(runs),
        "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, shared with other work",
    }
    write(result, args.output)


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    for key, row in result["summary"].items():
        print(f"{key:<70} acc {row['accuracy_mean']:.3f}  macro-F1 {row['macro_f1_mean']:.3f}")


def merge(parts: list[Path], output: Path) -> None:
    """One result from runs split over processes (their draws differ)."""
    loaded = [json.loads(p.read_text()) for p in parts]
    runs = [r for part in loaded for r in part["runs"]]
    result = {**loaded[0], "runs": runs, "summary": summarise(runs), "draws": len({r["draw"] for r in runs}),
              "seconds": max(part["seconds"] for part in loaded), "processes": len(parts)}  # fmt: skip
    write(result, output)


if __name__ == "__main__":
    main()
