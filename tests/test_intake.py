"""Intake, in memory: the change rule, row checks across chunks, the one date rule, and a
complaint in two exports taken from the latest; no store or model needed."""

import datetime as dt
import os

import pandas as pd

from pipelines.config import Settings
from pipelines.intake import ExportReader, LatestSource, classify, prepare
from pipelines.reviews import read_reviews
from pipelines.store import short_hash

TODAY = dt.date(2026, 3, 2)
HEADER = "complaint_id,received_date,closed_date,service,text,theme,feedback_type\n"


def _rows(**texts) -> pd.DataFrame:
    rows = pd.DataFrame(
        {"complaint_id": list(texts), "text": list(texts.values()), "received_date": dt.date(2026, 2, 2)}
    )
    for field in ["closed_date", "learning_completed_date", "acknowledged_date"]:
        rows[field] = None
    for field in ["service", "outcome", "ombudsman_referral", "human_theme", "feedback_type_given"]:
        rows[field] = ""
    return prepare(rows, TODAY)


def _known(prepared: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"text_hash": short_hash(prepared["text_sha256"]).to_numpy(),
         "details_hash": short_hash(prepared["details_sha256"]).to_numpy()},
        index=pd.Index(prepared["complaint_id"], name="complaint_id"),
    )  # fmt: skip


def test_change_rule_new_text_changed_details_changed_unchanged():
    stored = _rows(a="late visit", b="no call back", c="lost form")
    tonight = _rows(a="late visit", b="no call back at all", c="lost form", d="rude carer")
    tonight.loc[tonight["complaint_id"] == "c", "service"] = "Home Care"  # details only
    tonight = prepare(tonight.drop(columns=["text_sha256", "details_sha256"]), TODAY)
    changes = classify(tonight, _known(stored))
    assert changes.counts == {"new": 1, "changed": 1, "updated": 1, "unchanged": 1}
    assert sorted(changes.to_score["complaint_id"]) == ["b", "d"]
    assert changes.details_only["complaint_id"].tolist() == ["c"]
    # Whitespace and case of the text are not a change (the hash is of the normalised text).
    again = classify(_rows(a="  late   visit "), _known(stored))
    assert again.counts["unchanged"] == 1 and again.to_score.empty


def test_row_checks_hold_across_chunks_and_name_file_row_and_column(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(
        HEADER
        + "C1,2026-01-05,,Home Care,late visit,,complaint\n"
        + "C2,05/01/2026,,Home Care,no call back,,complaint\n"
        + "C1,2026-01-06,,Home Care,the same id again,,complaint\n"  # a duplicate, in the next chunk
        + "C3,31/02/2026,,Home Care,a date that is not one,,complaint\n"
        + "C4,2026-01-07,,Home Care,thanks,,praise\n"  # not a feedback type of the taxonomy
        + "C5,,,Home Care,no date at all,,complaint\n"
    )
    reader = ExportReader(Settings(chunk_rows=2))
    parts = list(reader.chunks(path))
    assert len(parts) == 3  # the rule holds across chunks: C1 is a duplicate in the second
    good = pd.concat([g for g, _ in parts], ignore_index=True)
    bad = pd.concat([b for _, b in parts], ignore_index=True).set_index("complaint_id")
    assert good["complaint_id"].tolist() == ["C1", "C2"]
    assert good["received_date"].tolist() == [dt.date(2026, 1, 5), dt.date(2026, 1, 5)]  # ISO and UK day-first
    assert set(bad.index) == {"C1", "C3", "C4", "C5"} and (bad["_file"] == str(path)).all()
    assert bad.loc["C3", "_column"] == "received_date" and "'31/02/2026' is not a date" in bad.loc["C3", "_reason"]
    assert bad.loc["C3", "source_row"] == 4 and bad.loc["C5", "_reason"] == "missing received date"
    assert "praise" in bad.loc["C4", "_reason"] and bad.loc["C4", "_column"] == "feedback_type"
    assert "duplicate" in bad.loc["C1", "_reason"] and bad.loc["C1", "source_row"] == 3


def test_a_complaint_in_two_exports_is_taken_from_the_latest_in_one_pass(tmp_path):
    older, newer = tmp_path / "a.csv", tmp_path / "b.csv"
    older.write_text(HEADER + "C1,2026-01-05,,North,first version,,\nC2,2026-01-05,,North,only here,,\n")
    newer.write_text(HEADER + "C1,2026-01-05,,North,second version,,\n")
    os.utime(older, (1, 1))  # exports are ordered oldest first by modification time
    reader, latest = ExportReader(Settings()), LatestSource([older, newer])
    kept = [latest.keep(rows) for source in latest.newest_first() for rows, _ in reader.chunks(source)]
    rows = pd.concat(kept, ignore_index=True).set_index("complaint_id")
    assert rows.loc["C1", "text"] == "second version" and rows.loc["C1", "source_file"] == "b.csv"
    assert sorted(rows.index) == ["C1", "C2"]


def test_a_review_date_follows_the_same_rule_and_a_bad_one_is_reported_not_hidden(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("id,date,concerns\nR1,14/05/2024,Duty triage under high demand.\nR2,next May,Rota cover.\n")
    reviews, problems = read_reviews(path)
    assert reviews["date"].tolist() == ["2024-05-14", ""]
    assert len(problems) == 1 and "R2: date 'next May' is not a date" in problems[0]["reason"]


def test_the_nightly_reading_step_counts_quarantines_updates_details_and_rebatches(tmp_path):
    """The nightly run's first step on a real (SQLite) store, without a model: what it yields
    to score, what it quarantines and counts, and the complaint it updates in place."""
    from pipelines import store
    from pipelines.nightly import Night, _batches, _changed_rows
    from pipelines.tables import TableWriter

    settings = Settings(state_dir=tmp_path, chunk_rows=2)
    engine = store.connect(settings.store)
    path = tmp_path / "export.csv"
    path.write_text(HEADER + "C1,2026-01-05,,North,late visit,,\nC2,2026-01-05,,North,lost form,,\n")
    night = Night(settings, engine, "run-1", TODAY, model_version="1")
    first = pd.concat(_changed_rows(night, [path], TableWriter(tmp_path / "q1.csv")), ignore_index=True)
    tags = pd.DataFrame({"theme": "communication", "theme_confidence": 0.9, "themes": "communication",
                         "needs_review": False, "evidence": "", "feedback_type": "complaint",
                         "complaint_id": first["complaint_id"], "text_sha256": first["text_sha256"]})  # fmt: skip
    store.start_run(engine, "run-1", "models:/m@champion", "1", {})
    store.write_batch(engine, next(_batches([first], 10)), tags, "run-1", settings.model_name, "1")
    path.write_text(
        HEADER + "C1,2026-01-05,,South,late visit,,\nC2,2026-01-05,,North,lost form again,,\nC3,,,North,x,,\n"
    )
    night = Night(settings, engine, "run-2", TODAY, model_version="1")
    quarantine = TableWriter(tmp_path / "q2.csv")
    batches = list(_batches(_changed_rows(night, [path], quarantine), 1))
    quarantine.close()
    assert [b["complaint_id"].tolist() for b in batches] == [["C2"]]  # its text changed
    assert "text_redacted" in batches[0] and night.counts["quarantined"] == 1  # C3: no received date
    assert {k: night.counts[k] for k in ("rows_read", "new", "changed", "updated", "unchanged")} == {
        "rows_read": 3, "new": 0, "changed": 1, "updated": 1, "unchanged": 0}  # fmt: skip
    assert store.read_complaints(engine, ["C1"], ["complaint_id", "service"])["service"].tolist() == ["South"]
    assert pd.read_csv(tmp_path / "q2.csv")["_reason"].tolist() == ["missing received date"]
