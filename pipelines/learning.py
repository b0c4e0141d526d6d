"""Learning from Serious Incident Reviews: read them, extract their learning points, group
the recurring ones (:mod:`pipelines.reviews`, :mod:`pipelines.grouping`) and write the
points and groups files, recording each grouping in MLflow.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.grouping import (
    REPRESENTATION,
    Grouping,
    OutdatedGrouping,
    assign_groups,
    fit_groups,
    load_seed_themes,
    passages,
    point_rows,
    summarise_groups,
)
from pipelines.reviews import extract_review_points, read_reviews

log = logging.getLogger(__name__)


POINTS_OUTPUT = [
    "report_id",
    "position",
    "section",
    "point_text",
    "group_id",
    "group_label",
    "recurring",
    "passage_text",
    "date",
    "team",
    "marker",
]


@dataclass
class LearningSummary:
    points: int
    groups: int
    recurring_groups: int
    ungrouped: int
    problems: list[dict]
    points_path: Path
    groups_path: Path | None

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 0


def group_reviews(
    source: Path,
    grouping_dir: Path | None = None,
    seed_themes: Path | None = None,
    id_column: str = "id",
    text_column: str = "concerns",
    date_column: str = "date",
    team_column: str = "team",
    name_column: str | None = None,
    random_state: int = 0,
    encoder_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(points, groups, problems): extract learning points from reviews and group them, reusing
    (and updating) the saved grouping in ``grouping_dir`` when there is one.

    The encoder is checked first: without verified weights nothing is read or written."""
    from pipelines.encoder import get_encoder
    from pipelines.tables import InputError

    encoder = get_encoder(encoder_dir)
    reviews, problems = read_reviews(source, id_column, text_column, date_column, team_column, name_column)
    points, empty = extract_review_points(reviews)
    problems += empty
    if points.empty:
        raise InputError(f"{source}: no learning points found in any review")
    units = passages(points)
    saved, first_id = None, 0
    if grouping_dir is not None and (grouping_dir / "groups.json").exists():
        try:
            saved = Grouping.load(grouping_dir)
        except OutdatedGrouping as old:
            # After an upgrade that changed the representation: keep the old grouping beside
            # the new one and regroup, with ids the old groups never had.
            first_id = old.next_id
            aside = grouping_dir.with_name(f"{grouping_dir.name}.before-{REPRESENTATION}")
            shutil.rmtree(aside, ignore_errors=True)
            grouping_dir.rename(aside)
            log.warning("saved grouping is from an earlier version; regrouping", extra={"fields": {"kept": str(aside)}})
    if saved is not None:
        grouping, assigned = assign_groups(saved, units, encoder)
    else:
        seeds = load_seed_themes(seed_themes) if seed_themes else None
        grouping, assigned = fit_groups(units, seeds, random_state, encoder, len(units) > 2000, first_id=first_id)
    if grouping_dir is not None:
        grouping.save(grouping_dir)
    for problem in problems:
        log.warning(
            "review skipped or empty",
            extra={"fields": {"source": problem["source"], "reason": problem["reason"][:200]}},
        )
    groups = summarise_groups(units.assign(group_id=assigned.astype(int)), grouping)
    return point_rows(units, assigned, grouping)[POINTS_OUTPUT], groups, problems


def write_learning_files(
    points: pd.DataFrame, groups: pd.DataFrame, problems: list[dict], points_path: Path, groups_path: Path | None
) -> LearningSummary:
    from pipelines.tables import TableWriter

    writer = TableWriter(points_path)
    writer.write(points[POINTS_OUTPUT])
    writer.close()
    if groups_path is not None:
        out = TableWriter(groups_path)
        out.write(groups)
        out.close()
    return LearningSummary(
        len(points.drop_duplicates(["report_id", "position"])),
        len(groups),
        int(groups["recurring"].sum()) if len(groups) else 0,
        int((points["group_id"] == -1).sum()),
        problems,
        points_path,
        groups_path,
    )


def run_learning(source: Path, points_path: Path, groups_path: Path | None = None, **grouping) -> LearningSummary:
    """Extract learning points from reviews, group them (reusing a saved grouping when there is
    one) and write the points and groups files; ``grouping`` takes :func:`group_reviews`'s options.

    Example: ``run_learning(Path("reviews/"), Path("points.csv"), Path("groups.csv"), grouping_dir=Path("g"))``
    """
    points, groups, problems = group_reviews(source, **grouping)
    return write_learning_files(points, groups, problems, points_path, groups_path)


def log_grouping(grouping_dir: Path, summary: LearningSummary, settings) -> str:
    """Record the grouping as an MLflow run: counts as metrics, the encoder's name, revision and
    hashes as parameters, the saved state (group names, point hashes) as an artifact. Never
    point text, nor the embeddings (they are derived from it)."""
    from pipelines import tracking

    state = json.loads((grouping_dir / "groups.json").read_text())
    encoder = state.get("encoder", {})
    metrics = {
        "points": summary.points,
        "groups": summary.groups,
        "recurring_groups": summary.recurring_groups,
        "ungrouped": summary.ungrouped,
        "problems": len(summary.problems),
    }
    params = {
        "encoder": encoder.get("name", ""),
        "encoder_revision": encoder.get("revision", ""),
        **{f"encoder_sha256_{k}": v for k, v in encoder.get("sha256", {}).items()},
        "representation": state.get("representation", ""),
    }
    return tracking.log_grouping(settings, metrics, params, grouping_dir / "groups.json")
