"""How well learning points are found and grouped, against hand-marked and coded reports.

*Boundary agreement*: the share of hand-marked learning points (character offsets into a
report's text) that extraction returns with the same boundaries.

*Theme recovery*: each theme is matched one-to-one (Hungarian algorithm) to the group whose
set of reports best fits the theme's set of reports (F1); the score is the mean F1 over
themes with at least ``min_reports`` reports. *Chance* is the same score with every group
replaced by a random set of reports of the same size; ``adjusted = (score - chance) / (1 - chance)``
says how much of the way from chance to perfect the grouping goes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def boundary_agreement(gold: pd.DataFrame, texts: pd.Series) -> tuple[int, int]:
    """(matched, total): hand-marked points extracted with the same boundaries.

    ``gold``: one row per marked point with ``report_id``, ``start``, ``end`` and ``sha1_12``
    (the first 12 hex digits of the marked span's SHA-1, so a changed source text is caught);
    ``texts``: each report's text, indexed by report id.
    """
    from pipelines.reviews import extract_points
    from pipelines.text import normalise

    matched = total = 0
    for report_id, marked in gold.groupby("report_id"):
        text = texts[report_id]
        spans = [text[int(s) : int(e)] for s, e in zip(marked["start"], marked["end"])]
        changed = [s for s, h in zip(spans, marked["sha1_12"]) if hashlib.sha1(s.encode()).hexdigest()[:12] != h]
        if changed:
            raise ValueError(f"report {report_id}: {len(changed)} hand-marked spans no longer match the text")
        ours = {p["point_text"] for p in extract_points(text)}
        matched += sum(normalise(s) in ours for s in spans)
        total += len(spans)
    return matched, total


def _report_sets(points: pd.DataFrame, reports: pd.Index) -> list[np.ndarray]:
    """Per group (ungrouped -1 excluded), a boolean mask over ``reports``."""
    grouped = points[points["group_id"] >= 0]
    return [reports.isin(set(members)) for _, members in grouped.groupby("group_id")["report_id"]]


def _mean_matched_f1(themes: np.ndarray, groups: list[np.ndarray]) -> float:
    if not groups:
        return 0.0
    G = np.vstack(groups).astype(float)  # groups x reports
    T = themes.T.astype(float)  # themes x reports
    overlap = T @ G.T
    f1 = 2 * overlap / (T.sum(axis=1, keepdims=True) + G.sum(axis=1) + 1e-12)
    rows, cols = linear_sum_assignment(-f1)
    matched = np.zeros(len(T))
    matched[rows] = f1[rows, cols]
    return float(matched.mean())


def theme_recovery(
    points: pd.DataFrame, labels: pd.DataFrame, min_reports: int = 4, chance_draws: int = 200, seed: int = 0
) -> dict:
    """Score a grouping against report-level theme labels.

    ``points``: one row per learning point with ``report_id`` and ``group_id``.
    ``labels``: one row per report, indexed by report id, one boolean column per theme.
    """
    coded = labels[labels.any(axis=1)]
    themes = coded.loc[:, coded.sum() >= min_reports]
    reports = pd.Index(themes.index.astype(str))
    in_scope = points[points["report_id"].astype(str).isin(reports)]
    groups = _report_sets(in_scope.assign(report_id=in_scope["report_id"].astype(str)), reports)
    theme_matrix = themes.to_numpy(dtype=bool)
    score = _mean_matched_f1(theme_matrix, groups)
    rng = np.random.default_rng(seed)
    sizes = [int(g.sum()) for g in groups]
    draws = []
    for _ in range(chance_draws):
        random_groups = []
        for size in sizes:
            mask = np.zeros(len(reports), dtype=bool)
            mask[rng.choice(len(reports), size=size, replace=False)] = True
            random_groups.append(mask)
        draws.append(_mean_matched_f1(theme_matrix, random_groups))
    chance = float(np.mean(draws))
    return {
        "score": score,
        "chance": chance,
        "adjusted": (score - chance) / (1 - chance) if chance < 1 else 0.0,
        "themes": list(themes.columns),
        "n_reports": len(reports),
        "n_groups": len(groups),
    }
