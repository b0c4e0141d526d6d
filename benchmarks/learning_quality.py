"""Learning-point grouping: theme recovery on coroners' reports, stability and determinism.

Writes benchmarks/results/learning_quality.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data nice -n 10 .venv/bin/python benchmarks/learning_quality.py

* extraction: share of the hand-marked learning points in tests/data/pfd_learning_points.csv
  that extraction returns with the same boundaries;
* theme recovery (pipelines.learning_metrics: Hungarian matching of themes to groups by report-set
  F1, the chance level of random groups of the same sizes, adjusted) on the development file
  pfd_road_traffic_dev.csv (silver labels, 47 themes with 4+ reports): our grouping (of the
  points' passages; scored on the rows `cli.py learning` writes, one per point and group), with
  and without the default learning framework, against KMeans with k = number of themes on
  TF-IDF (of the points, and of sentences of the whole concerns text) and on the encoder's
  embeddings (of the points, and of the same passages we group), 3 seeds each;
* the same on pfd_suicide_reports.csv (weak machine-assigned family_* labels), a check only;
* the seed SIR: its points, added to the grouping of the suicide reports;
* stability: group 80% of the development reports, then add the other 20% through the saved
  grouping; share of the first points' rows (point, group) and passages that keep their group
  id; determinism: two runs.
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
from pipelines.grouping import Grouping, assign_groups, fit_groups, load_seed_themes, passages, point_rows, text_keys
from pipelines.learning_metrics import boundary_agreement, theme_recovery
from pipelines.reviews import extract_points, extract_review_points, read_review_document
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
    points: pd.DataFrame,
    units: pd.DataFrame,
    reports: pd.DataFrame,
    labels: pd.DataFrame,
    cache: dict,
    id_column: str,
) -> dict:
    """KMeans with k = number of themes (4+ reports) on TF-IDF and on the encoder's vectors."""
    coded = labels[labels.any(axis=1)]
    k = int((coded.sum() >= 4).sum())
    sentences = sentences_of(reports, id_column)
    tfidf_points = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(points["point_text"])
    tfidf_sentences = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(sentences["text"])
    point_vectors = np.vstack([cache[key] for key in text_keys(points["point_text"].tolist())])
    unit_vectors = np.vstack([cache[key] for key in text_keys(units["point_text"].tolist())])
    out = {name: [] for name in BASELINES}
    out["k"] = k
    for seed in SEEDS:
        kmeans = KMeans(k, random_state=seed, n_init=10)
        out["tfidf_kmeans_points"].append(adjusted(points, kmeans.fit_predict(tfidf_points), labels))
        out["tfidf_kmeans_sentences"].append(adjusted(sentences, kmeans.fit_predict(tfidf_sentences), labels))
        out["encoder_kmeans_points"].append(adjusted(points, kmeans.fit_predict(point_vectors), labels))
        out["encoder_kmeans_passages"].append(adjusted(units, kmeans.fit_predict(unit_vectors), labels))
    return out


BASELINES = ("tfidf_kmeans_points", "tfidf_kmeans_sentences", "encoder_kmeans_points", "encoder_kmeans_passages")


def ours(units: pd.DataFrame, labels: pd.DataFrame, cache: dict, seeds=None) -> dict:
    runs = [fit_groups(units, seeds, s, embeddings=cache) for s in SEEDS]
    rows = [point_rows(units, a, g) for g, a in runs]
    scores = [theme_recovery(r, labels) for r in rows]
    grouping, assigned = runs[0]
    return {
        "adjusted_by_seed": [s["adjusted"] for s in scores],
        "mean_adjusted": float(np.mean([s["adjusted"] for s in scores])),
        "score": scores[0]["score"],
        "chance": scores[0]["chance"],
        "groups": len(grouping.group_ids),
        "groups_with_points": int(len(np.unique(assigned[assigned >= 0]))),
        "passages": len(units),
        "points": int(len(units.drop_duplicates(["report_id", "position"]))),
        "rows_written": len(rows[0]),
        "points_in_more_than_one_group": int(
            (rows[0][rows[0]["group_id"] >= 0].groupby(["report_id", "position"]).size() > 1).sum()
        ),
        "not_yet_recurring_share_of_passages": float((assigned == -1).mean()),
        "not_yet_recurring_share_of_points": float(
            (rows[0]["group_id"] == -1).sum() / len(rows[0].drop_duplicates(["report_id", "position"]))
        ),
        "join_threshold": grouping.assign_threshold,
        "labels_sample": grouping.labels[:25],
    }


def stability(units: pd.DataFrame, cache: dict) -> dict:
    ids = sorted(units["report_id"].unique())
    first_ids = set(np.random.default_rng(0).choice(ids, size=int(0.8 * len(ids)), replace=False))
    in_first = units["report_id"].isin(first_ids).to_numpy()
    first = units[in_first].reset_index(drop=True)
    g1, a1 = fit_groups(first, random_state=0, embeddings=cache)
    with tempfile.TemporaryDirectory() as tmp:
        g1.save(Path(tmp))
        g2, a2 = assign_groups(Grouping.load(Path(tmp)), units)
    after = a2[in_first]  # the same passages, in the same order
    grouped = a1 >= 0
    key = ["report_id", "position", "group_id"]
    rows_before = point_rows(first, a1, g1)[key]
    rows_after = point_rows(units, a2, g2)[key]
    kept = rows_before.merge(rows_after, on=key, how="left", indicator=True)["_merge"] == "both"
    again, assigned_again = fit_groups(units, random_state=0, embeddings=cache)
    once, assigned_once = fit_groups(units, random_state=0, embeddings=cache)
    return {
        "share_of_earlier_point_rows_kept": float(kept.mean()),
        "share_of_earlier_passages_with_the_same_group_id": float((after == a1).mean()),
        "share_of_earlier_grouped_passages_with_the_same_group_id": float((after[grouped] == a1[grouped]).mean()),
        "earlier_not_yet_recurring_passages_now_grouped": int(((a1 == -1) & (after >= 0)).sum()),
        "new_passages_joining_existing_groups_share": float((a2[~in_first] >= 0).mean()),
        "new_groups_after_adding_20pct": len(g2.group_ids) - len(g1.group_ids),
        "identical_on_rerun": bool((assigned_once == assigned_again).all() and once.labels == again.labels),
    }


def embedded(frames: list[pd.DataFrame]) -> dict:
    """Every text's embedding, once, shared by all the runs below."""
    texts = sorted({t for frame in frames for t in frame["point_text"]})
    return dict(zip(text_keys(texts), get_encoder().encode(texts, progress=True)))


def main() -> None:
    gold = pd.read_csv(GOLD, dtype=str, keep_default_na=False)
    suicide = fetch_pfd_reports()
    matched, marked = boundary_agreement(gold, suicide.set_index("id")["concerns"])
    road, road_labels = fetch_pfd_road_traffic()
    road_points, _ = extract_review_points(pfd_as_reviews(road, "url"))  # ids repeat; urls do not
    road_units = passages(road_points)
    cache = embedded([road_points, road_units])
    dev = {
        "points": len(road_points),
        "reports": int(road_points["report_id"].nunique()),
        "ours": ours(road_units, road_labels, cache),
        "ours_with_default_framework": ours(road_units, road_labels, cache, load_seed_themes(FRAMEWORK)),
        **baselines(road_points, road_units, road, road_labels, cache, "url"),
        "stability": stability(road_units, cache),
    }
    for name in BASELINES:
        dev[f"gain_over_{name}"] = dev["ours"]["mean_adjusted"] - float(np.mean(dev[name]))

    family = suicide.set_index("id").filter(like="family_").apply(lambda s: s.str.lower() == "true")
    suicide_points, _ = extract_review_points(fetch_pfd_reviews())
    suicide_units = passages(suicide_points)
    suicide_cache = embedded([suicide_points, suicide_units])
    check = {
        "points": len(suicide_points),
        "ours": ours(suicide_units, family, suicide_cache),
        **baselines(suicide_points, suicide_units, suicide, family, suicide_cache, "id"),
    }
    grouping, _ = fit_groups(suicide_units, random_state=0, embeddings=suicide_cache)
    sir = read_review_document(ROOT / "tests" / "fixtures" / "sir_seed.docx")
    sir_points = pd.DataFrame(extract_points(sir["text"])).assign(report_id="sir_seed", date="", team="")
    sir_units = passages(sir_points)
    _, sir_groups = assign_groups(grouping, pd.concat([suicide_units, sir_units], ignore_index=True))
    sir_rows = point_rows(sir_units, sir_groups[len(suicide_units) :], grouping)
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
            {"point": int(p), "group": names.get(int(g), "not yet recurring")}
            for p, g in zip(sir_rows["position"], sir_rows["group_id"])
        ],
    }
    print(json.dumps(results, indent=1))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
