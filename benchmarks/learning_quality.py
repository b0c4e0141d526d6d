"""Learning-point grouping: theme recovery on the coroners' reports, stability and determinism.

Writes benchmarks/results/learning_quality.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/learning_quality.py

* extraction: share of the hand-marked learning points in tests/data/pfd_learning_points.csv
  (25+ reports) that extraction returns with the same boundaries;
* theme recovery (pipelines.evaluation) against the PFD file's family_* labels (weak, machine
  assigned), for our grouping and for the baseline the issue names: KMeans on TF-IDF
  sentences with k = number of themes;
* stability: group 80% of the reports, then add the other 20% through the saved grouping;
  share of the first points that keep their group id;
* determinism: the same input and seed twice give identical assignments and labels;
* smaller inputs: the same comparison on 12 random subsets of 25%, 50% and 75% of the reports
  (a council has fewer reviews than the coroners' file), mean adjusted score of each.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.datasets import fetch_pfd_reports, fetch_pfd_reviews
from pipelines.evaluation import boundary_agreement, theme_recovery
from pipelines.learning import Grouping, assign_groups, extract_review_points, fit_groups
from pipelines.text import make_nlp

RESULTS = Path(__file__).parent / "results" / "learning_quality.json"
GOLD = Path(__file__).parent.parent / "tests" / "data" / "pfd_learning_points.csv"


def kmeans_baseline(sentences: pd.DataFrame, k: int) -> np.ndarray:
    """The issue's baseline: KMeans on TF-IDF sentences with k = number of themes."""
    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(sentences["text"])
    return KMeans(k, random_state=0, n_init=10).fit_predict(tfidf)


def main() -> None:
    pfd = fetch_pfd_reports()
    labels = pfd.set_index("id").filter(like="family_").apply(lambda s: s.str.lower() == "true")
    gold = pd.read_csv(GOLD, dtype=str, keep_default_na=False)
    matched, marked = boundary_agreement(gold, pfd.set_index("id")["concerns"])
    reviews = fetch_pfd_reviews()
    points, _ = extract_review_points(reviews)
    started = time.monotonic()
    grouping, assigned = fit_groups(points, random_state=0)
    seconds = time.monotonic() - started
    ours = theme_recovery(points.assign(group_id=assigned), labels)
    # The family_* labels are weak and the score moves with the seed: report the spread too.
    by_seed = [
        theme_recovery(points.assign(group_id=fit_groups(points, random_state=s)[1]), labels)["adjusted"]
        for s in range(5)
    ]

    nlp = make_nlp(sentences=True)
    sentences = pd.DataFrame(
        [
            (rid, s.text)
            for rid, text in zip(pfd["id"], pfd["concerns"])
            for s in nlp(text).sents
            if len(s.text.strip()) > 20
        ],
        columns=["report_id", "text"],
    )
    baseline = theme_recovery(sentences.assign(group_id=kmeans_baseline(sentences, labels.shape[1])), labels)
    subsets = {}
    for share in (0.25, 0.5, 0.75):
        ours_sub, base_sub = [], []
        for draw in range(12):
            keep = set(np.random.default_rng(100 + draw).choice(pfd["id"], size=int(share * len(pfd)), replace=False))
            sub_points = points[points["report_id"].isin(keep)].reset_index(drop=True)
            sub_sentences = sentences[sentences["report_id"].isin(keep)].reset_index(drop=True)
            sub_labels = labels[labels.index.isin(keep)]
            sub_assigned = fit_groups(sub_points, random_state=0)[1]
            ours_sub.append(theme_recovery(sub_points.assign(group_id=sub_assigned), sub_labels)["adjusted"])
            base_groups = kmeans_baseline(sub_sentences, labels.shape[1])
            base_sub.append(theme_recovery(sub_sentences.assign(group_id=base_groups), sub_labels)["adjusted"])
        subsets[f"{int(share * 100)}pct_of_reports"] = {
            "ours_mean_adjusted": float(np.mean(ours_sub)),
            "baseline_mean_adjusted": float(np.mean(base_sub)),
            "ours_by_draw": ours_sub,
        }

    # Stability: 80% of reports first, then all of them through the saved grouping.
    rng = np.random.default_rng(0)
    first_ids = set(rng.choice(pfd["id"], size=int(0.8 * len(pfd)), replace=False))
    first = points[points["report_id"].isin(first_ids)].reset_index(drop=True)
    g1, a1 = fit_groups(first, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        g1.save(Path(tmp))
        g2, a2 = assign_groups(Grouping.load(Path(tmp)), points)
    key = first["report_id"] + "#" + first["position"].astype(str)
    later = pd.Series(a2, index=points["report_id"] + "#" + points["position"].astype(str))
    kept = float((later.loc[key].to_numpy() == a1).mean())

    again, assigned_again = fit_groups(points, random_state=0)
    identical = bool((assigned == assigned_again).all() and grouping.labels == again.labels)

    results = {
        "extraction": {
            "hand_marked_reports": int(gold["report_id"].nunique()),
            "hand_marked_points": marked,
            "same_boundaries": matched,
            "share": matched / marked,
        },
        "points": len(points),
        "reports": int(points["report_id"].nunique()),
        "groups": len(grouping.group_ids),
        "ungrouped_share": float((assigned == -1).mean()),
        "fit_seconds": seconds,
        "theme_recovery": {k: ours[k] for k in ("score", "chance", "adjusted")},
        "baseline_kmeans_tfidf_sentences": {k: baseline[k] for k in ("score", "chance", "adjusted")},
        "adjusted_gain_over_baseline": ours["adjusted"] - baseline["adjusted"],
        "adjusted_by_seed_0_to_4": by_seed,
        "mean_adjusted_gain_over_baseline_5_seeds": float(np.mean(by_seed)) - baseline["adjusted"],
        "stability_share_kept_after_adding_20pct": kept,
        "new_groups_after_adding_20pct": len(g2.group_ids) - len(g1.group_ids),
        "identical_on_rerun": identical,
        "random_subsets_12_draws": subsets,
        "group_labels": grouping.labels,
    }
    print(json.dumps({k: v for k, v in results.items() if k != "group_labels"}, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
