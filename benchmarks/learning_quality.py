"""Learning-point grouping: theme recovery on coroners' reports, stability and determinism.

Writes benchmarks/results/learning_quality.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/learning_quality.py

* extraction: share of the hand-marked learning points in tests/data/pfd_learning_points.csv
  that extraction returns with the same boundaries;
* theme recovery (pipelines.evaluation: Hungarian matching of themes to groups by report-set
  F1, the chance level of random groups of the same sizes, adjusted) on the development file
  pfd_road_traffic_dev.csv (silver labels, 47 themes with 4+ reports): our grouping, with and
  without the default learning framework, against KMeans with k = number of themes on TF-IDF
  (of the same points, and of sentences as before) and on the encoder's embeddings, 3 seeds each;
* the same on pfd_suicide_reports.csv (weak machine-assigned family_* labels), a check only;
* the seed SIR: its points, added to the grouping of the suicide reports;
* stability: group 80% of the development reports, then add the other 20% through the saved
  grouping; share of the first points that keep their group id; determinism: two runs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.datasets import fetch_pfd_reports, fetch_pfd_reviews, fetch_pfd_road_traffic, pfd_as_reviews
from pipelines.encoder import get_encoder
from pipelines.evaluation import boundary_agreement, theme_recovery
from pipelines.learning import (
    Grouping,
    assign_groups,
    extract_points,
    extract_review_points,
    fit_groups,
    load_seed_themes,
    read_review_document,
    text_keys,
)
from pipelines.text import make_nlp

ROOT = Path(__file__).parent.parent
RESULTS = Path(__file__).parent / "results" / "learning_quality.json"
GOLD = ROOT / "tests" / "data" / "pfd_learning_points.csv"
FRAMEWORK = ROOT / "data" / "frameworks" / "sar_learning_domains.yaml"
SEEDS = (0, 1, 2)


def adjusted(units: pd.DataFrame, groups: np.ndarray, labels: pd.DataFrame) -> float:
    return theme_recovery(units.assign(group_id=groups), labels)["adjusted"]


def sentences_of(reports: pd.DataFrame, id_column: str) -> pd.DataFrame:
    nlp = make_nlp(sentences=True)
    return pd.DataFrame(
        [
            (rid, s.text)
            for rid, text in zip(reports[id_column], reports["concerns"])
            for s in nlp(text).sents
            if len(s.text.strip()) > 20
        ],
        columns=["report_id", "text"],
    )


def baselines(
    points: pd.DataFrame, reports: pd.DataFrame, labels: pd.DataFrame, vectors: np.ndarray, id_column: str
) -> dict:
    """KMeans with k = number of themes (4+ reports) on TF-IDF and on the encoder's vectors."""
    coded = labels[labels.any(axis=1)]
    k = int((coded.sum() >= 4).sum())
    sentences = sentences_of(reports, id_column)
    tfidf_points = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(points["point_text"])
    tfidf_sentences = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(sentences["text"])
    out = {"k": k, "tfidf_kmeans_points": [], "tfidf_kmeans_sentences": [], "encoder_kmeans_points": []}
    for seed in SEEDS:
        kmeans = KMeans(k, random_state=seed, n_init=10)
        out["tfidf_kmeans_points"].append(adjusted(points, kmeans.fit_predict(tfidf_points), labels))
        out["tfidf_kmeans_sentences"].append(adjusted(sentences, kmeans.fit_predict(tfidf_sentences), labels))
        out["encoder_kmeans_points"].append(adjusted(points, kmeans.fit_predict(vectors), labels))
    return out


def ours(points: pd.DataFrame, labels: pd.DataFrame, cache: dict, seeds=None) -> dict:
    runs = [fit_groups(points, seeds, s, embeddings=cache) for s in SEEDS]
    scores = [theme_recovery(points.assign(group_id=a), labels) for _, a in runs]
    grouping, assigned = runs[0]
    return {
        "adjusted_by_seed": [s["adjusted"] for s in scores],
        "mean_adjusted": float(np.mean([s["adjusted"] for s in scores])),
        "score": scores[0]["score"],
        "chance": scores[0]["chance"],
        "groups": len(grouping.group_ids),
        "groups_with_points": int(len(np.unique(assigned[assigned >= 0]))),
        "not_yet_recurring_share": float((assigned == -1).mean()),
        "labels_sample": grouping.labels[:25],
    }


def stability(points: pd.DataFrame, cache: dict) -> dict:
    ids = sorted(points["report_id"].unique())
    first_ids = set(np.random.default_rng(0).choice(ids, size=int(0.8 * len(ids)), replace=False))
    in_first = points["report_id"].isin(first_ids).to_numpy()
    first = points[in_first].reset_index(drop=True)
    g1, a1 = fit_groups(first, random_state=0, embeddings=cache)
    with tempfile.TemporaryDirectory() as tmp:
        g1.save(Path(tmp))
        g2, a2 = assign_groups(Grouping.load(Path(tmp)), points)
    after = a2[in_first]  # the same points, in the same order
    grouped = a1 >= 0
    again, assigned_again = fit_groups(points, random_state=0, embeddings=cache)
    once, assigned_once = fit_groups(points, random_state=0, embeddings=cache)
    return {
        "share_of_earlier_points_with_the_same_group_id": float((after == a1).mean()),
        "share_of_earlier_grouped_points_with_the_same_group_id": float((after[grouped] == a1[grouped]).mean()),
        "earlier_not_yet_recurring_points_now_grouped": int(((a1 == -1) & (after >= 0)).sum()),
        "new_points_joining_existing_groups_share": float((a2[~in_first] >= 0).mean()),
        "new_groups_after_adding_20pct": len(g2.group_ids) - len(g1.group_ids),
        "identical_on_rerun": bool((assigned_once == assigned_again).all() and once.labels == again.labels),
    }


def embedded(points: pd.DataFrame) -> tuple[dict, np.ndarray]:
    """Every point's embedding, once, shared by all the runs below."""
    texts = points["point_text"].tolist()
    vectors = get_encoder().encode(texts, progress=True)
    return dict(zip(text_keys(texts), vectors)), vectors


def main() -> None:
    gold = pd.read_csv(GOLD, dtype=str, keep_default_na=False)
    suicide = fetch_pfd_reports()
    matched, marked = boundary_agreement(gold, suicide.set_index("id")["concerns"])
    road, road_labels = fetch_pfd_road_traffic()
    road_points, _ = extract_review_points(pfd_as_reviews(road, "url"))  # ids repeat; urls do not
    cache, vectors = embedded(road_points)
    dev = {
        "points": len(road_points),
        "reports": int(road_points["report_id"].nunique()),
        "ours": ours(road_points, road_labels, cache),
        "ours_with_default_framework": ours(road_points, road_labels, cache, load_seed_themes(FRAMEWORK)),
        **baselines(road_points, road, road_labels, vectors, "url"),
        "stability": stability(road_points, cache),
    }
    dev["gain_over_tfidf_kmeans_points"] = dev["ours"]["mean_adjusted"] - float(np.mean(dev["tfidf_kmeans_points"]))
    dev["gain_over_tfidf_kmeans_sentences"] = dev["ours"]["mean_adjusted"] - float(
        np.mean(dev["tfidf_kmeans_sentences"])
    )

    family = suicide.set_index("id").filter(like="family_").apply(lambda s: s.str.lower() == "true")
    suicide_points, _ = extract_review_points(fetch_pfd_reviews())
    suicide_cache, suicide_vectors = embedded(suicide_points)
    check = {
        "points": len(suicide_points),
        "ours": ours(suicide_points, family, suicide_cache),
        **baselines(suicide_points, suicide, family, suicide_vectors, "id"),
    }
    grouping, _ = fit_groups(suicide_points, random_state=0, embeddings=suicide_cache)
    sir = read_review_document(ROOT / "tests" / "fixtures" / "sir_seed.docx")
    sir_points = pd.DataFrame(extract_points(sir["text"])).assign(report_id="sir_seed", date="", team="")
    _, sir_groups = assign_groups(grouping, pd.concat([suicide_points, sir_points], ignore_index=True))
    names = dict(zip(grouping.group_ids, grouping.labels))
    results = {
        "extraction": {
            "hand_marked_reports": int(gold["report_id"].nunique()),
            "hand_marked_points": marked,
            "same_boundaries": matched,
            "share": matched / marked,
        },
        "pfd_road_traffic_dev": dev,
        "pfd_suicide_reports": check,
        "seed_sir_added_to_the_suicide_grouping": [
            names.get(int(g), "not yet recurring") for g in sir_groups[len(suicide_points) :]
        ],
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
