"""The results store: complaints, their taggings (current and history), the run ledger,
quarantined rows and the run lock, in any database SQLAlchemy reaches (SQLite by default,
PostgreSQL tested).

The schema is created by a versioned step (:func:`ensure_schema`); a store written by a
newer version of the package is refused rather than damaged. Every write that belongs
together (a batch of complaints and their taggings) happens in one transaction, so a run
killed at any point leaves the store as it was after the last whole batch.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    case,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from pipelines.schema import TAGGING_FIELDS

SCHEMA_VERSION = 6  # 2: export_files, learning tables; 3: bulletins; 4: corrections, aliases;
# 5: runs.updated (detail-only updates), complaints.acknowledged_date, learning_groups.representative_point;
# 6: learning_points one row per point and group (a point can teach more than one thing), passage_text
metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False),
)
complaints = Table(
    "complaints",
    metadata,
    Column("complaint_id", String(200), primary_key=True),
    Column("source_file", String(500)),
    Column("received_date", Date),
    Column("closed_date", Date),
    Column("service", String(300)),
    Column("text_redacted", Text),
    Column("text_sha256", String(64), nullable=False),
    Column("details_sha256", String(64), nullable=False),
    Column("outcome", String(200)),
    Column("ombudsman_referral", String(50)),
    Column("human_theme", String(200)),
    Column("feedback_type_given", String(50)),
    Column("learning_completed_date", Date),
    Column("learning_deadline", Date),
    Column("learning_status", String(30)),
    Column("acknowledgement_deadline", Date),
    Column("acknowledged_date", Date),
    Column("first_seen_run", String(40)),
    Column("updated_run", String(40)),
)
taggings = Table(
    "taggings",
    metadata,
    Column("tagging_id", Integer, primary_key=True, autoincrement=True),
    Column("complaint_id", String(200), nullable=False),
    Column("is_current", Boolean, nullable=False),
    Column("theme", String(200)),
    Column("theme_confidence", Float),
    Column("themes", Text),
    Column("needs_review", Boolean),
    Column("evidence", Text),
    Column("feedback_type", String(50)),
    Column("model_name", String(200)),
    Column("model_version", String(50)),
    Column("text_sha256", String(64)),
    Column("run_id", String(40)),
    Column("tagged_at", DateTime),
    # One index for "the current tagging of this complaint": an index on is_current alone
    # leads SQLite to scan every current tagging for each complaint (quadratic).
    Index("ix_taggings_complaint_current", "complaint_id", "is_current"),
)
runs = Table(
    "runs",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("status", String(30), nullable=False),
    Column("rows_read", Integer, default=0),
    Column("new", Integer, default=0),
    Column("changed", Integer, default=0),
    Column("scored", Integer, default=0),
    Column("quarantined", Integer, default=0),
    Column("unchanged", Integer, default=0),
    Column("updated", Integer, default=0),  # details (dates, outcome...) changed, text did not: not re-scored
    Column("model_uri", String(500)),
    Column("model_version", String(50)),
    Column("input_fingerprints", Text),
    Column("seconds", Float),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("message", Text),
)
quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(40), index=True),
    Column("source_file", String(500)),
    Column("source_row", Integer),
    Column("column_name", String(200)),
    Column("reason", Text),
    Column("complaint_id", String(200)),
    Column("created_at", DateTime),
)
export_files = Table(
    "export_files",
    metadata,
    # An export whose content was wholly processed by a finished run is not read again.
    Column("sha256", String(64), primary_key=True),
    Column("file_name", String(500)),
    Column("run_id", String(40)),
    Column("processed_at", DateTime),
)
learning_updates = Table(
    "learning_updates",
    metadata,
    # The reviews' fingerprint at each learning update, so unchanged reviews are not regrouped.
    Column("fingerprint", String(64), primary_key=True),
    Column("run_id", String(40)),
    Column("updated_at", DateTime),
    Column("points", Integer),
    Column("groups", Integer),
)
learning_points = Table(
    "learning_points",
    metadata,
    Column("report_id", String(200), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("group_id", Integer, primary_key=True, index=True),
    Column("section", String(300)),
    Column("point_text", Text),  # redacted
    Column("passage_text", Text),  # redacted: the sentence of the point that put it in the group
    Column("group_label", String(300)),
    Column("date", String(20)),
    Column("team", String(300)),
    Column("marker", String(20)),
    Column("run_id", String(40)),
)
learning_groups = Table(
    "learning_groups",
    metadata,
    Column("group_id", Integer, primary_key=True),
    Column("group_label", String(300)),
    Column("n_points", Integer),
    Column("n_reviews", Integer),
    Column("teams", Text),
    Column("first_seen", String(20)),
    Column("last_seen", String(20)),
    Column("recurring", Boolean),
    Column("representative_point", Text),  # redacted: the point nearest the group's centre
    Column("representative_points", Text),  # redacted
    Column("first_run", String(40)),  # the run that first saw the group: new groups per bulletin
    Column("run_id", String(40)),
)
corrections = Table(
    "corrections",
    metadata,
    # Analysts' themes, kept apart from the model's taggings and from the export's own theme;
    # the latest correction of a complaint wins in reports and training.
    Column("correction_id", Integer, primary_key=True, autoincrement=True),
    Column("complaint_id", String(200), nullable=False, index=True),
    Column("theme", String(200), nullable=False),
    Column("reviewer", String(200)),
    Column("corrected_at", DateTime, nullable=False),
    Column("source_file", String(500)),
    Column("source_row", Integer),
)
alias_history = Table(
    "alias_history",
    metadata,
    # Every promotion decision: what ran in production, when, why, and on what evidence.
    Column("decision_id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(200), nullable=False),
    Column("version", String(50), nullable=False),
    Column("alias", String(50), nullable=False),
    Column("previous_champion", String(50)),
    Column("decided_at", DateTime, nullable=False),
    Column("decided_by", String(200)),
    Column("evaluation_set", String(200)),
    Column("metrics", Text),  # JSON: candidate and champion macro-F1 and per-theme F1
    Column("reason", Text),
)
bulletins = Table(
    "bulletins",
    metadata,
    # What each learning bulletin showed, so the next one can say what is new and growing.
    Column("bulletin_id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime, nullable=False),
    Column("groups", Text),  # JSON: group id -> points and reviews at the time
)
locks = Table(
    "locks",
    metadata,
    Column("name", String(50), primary_key=True),
    Column("run_id", String(40)),
    Column("pid", Integer),
    Column("host", String(200)),
    Column("acquired_at", DateTime),
)


class StoreError(RuntimeError):
    """The store cannot be used (e.g. it was written by a newer version)."""


class LockHeld(RuntimeError):
    """Another run holds the lock."""


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def connect(url: str) -> Engine:
    """An engine for the store URL, with the schema in place."""
    engine = create_engine(url, future=True)
    if engine.url.get_backend_name() == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    ensure_schema(engine)
    return engine


def ensure_schema(engine: Engine) -> int:
    """Create the tables of this schema version if missing; refuse a newer store."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        found = conn.execute(select(schema_version.c.version).order_by(schema_version.c.version.desc())).first()
        if found is None:
            conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=now()))
            return SCHEMA_VERSION
        if found.version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {found.version} is newer than this package's ({SCHEMA_VERSION}); upgrade the package"
            )
        if found.version < SCHEMA_VERSION:
            # Versions so far add tables, which create_all has just made, and nullable columns.
            for table in (runs, complaints, learning_groups):
                _add_missing_columns(conn, table)
            if found.version < 6:
                # The learning points' key gained group_id. The table is rewritten whole at each
                # learning update, so it is made anew, and the next run regroups the reviews.
                learning_points.drop(conn)
                learning_points.create(conn)
                conn.execute(delete(learning_updates))
            conn.execute(insert(schema_version).values(version=SCHEMA_VERSION, applied_at=now()))
        return SCHEMA_VERSION


def _add_missing_columns(conn, table: Table) -> None:
    """Add the nullable columns a table of an older store lacks (ALTER TABLE ... ADD COLUMN)."""
    from sqlalchemy import inspect, text

    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for column in table.columns:
        if column.name not in present:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def acquire_lock(engine: Engine, run_id: str, name: str = "nightly") -> str | None:
    """Take the run lock; returns the run id of a dead holder whose lock was recovered, if any.

    Raises :class:`LockHeld` when a live process holds it. A holder on this host whose
    process has gone is stale and its lock is taken over.
    """
    host, pid = socket.gethostname(), os.getpid()
    row = {"name": name, "run_id": run_id, "pid": pid, "host": host, "acquired_at": now()}
    try:
        with engine.begin() as conn:
            conn.execute(insert(locks).values(**row))
        return None
    except IntegrityError:
        pass
    with engine.begin() as conn:
        holder = conn.execute(select(locks).where(locks.c.name == name)).first()
        if holder is None:  # released meanwhile
            conn.execute(insert(locks).values(**row))
            return None
        if holder.host != host or psutil.pid_exists(holder.pid):
            raise LockHeld(
                f"another run ({holder.run_id}, pid {holder.pid} on {holder.host}) has held the lock since {holder.acquired_at:%Y-%m-%d %H:%M}"
            )
        # Stale: replace it only if it is still the same dead holder (another run may race us).
        gone = conn.execute(delete(locks).where(locks.c.name == name, locks.c.run_id == holder.run_id))
        if gone.rowcount != 1:
            raise LockHeld("another run recovered the stale lock first")
        conn.execute(insert(locks).values(**row))
        conn.execute(
            update(runs)
            .where(runs.c.run_id == holder.run_id, runs.c.status == "running")
            .values(status="abandoned", message="process died; lock recovered")
        )
        return holder.run_id


def release_lock(engine: Engine, run_id: str, name: str = "nightly") -> None:
    with engine.begin() as conn:
        conn.execute(delete(locks).where(locks.c.name == name, locks.c.run_id == run_id))


def start_run(engine: Engine, run_id: str, model_uri: str, model_version: str, fingerprints: dict) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(runs).values(
                run_id=run_id,
                started_at=now(),
                status="running",
                model_uri=model_uri,
                model_version=model_version,
                input_fingerprints=json.dumps(fingerprints, sort_keys=True),
                pid=os.getpid(),
                host=socket.gethostname(),
            )
        )


def finish_run(
    engine: Engine,
    run_id: str,
    status: str,
    counts: dict,
    seconds: float,
    message: str = "",
    processed: dict[str, str] | None = None,
) -> None:
    """Close the run in the ledger and, in the same transaction, mark the exports it wholly
    processed (file name -> sha256) so later runs skip them."""
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id)
            .values(status=status, finished_at=now(), seconds=seconds, message=message, **counts)
        )
        if processed:
            done = {r[0] for r in conn.execute(select(export_files.c.sha256))}
            stamp = now()
            fresh = {sha: name for name, sha in processed.items() if sha not in done}
            if fresh:
                conn.execute(
                    insert(export_files),
                    [
                        {"sha256": sha, "file_name": name, "run_id": run_id, "processed_at": stamp}
                        for sha, name in fresh.items()
                    ],
                )


def processed_exports(engine: Engine) -> set[str]:
    """sha256 of every export a finished run has wholly processed."""
    with engine.connect() as conn:
        return {r[0] for r in conn.execute(select(export_files.c.sha256))}


def short_hash(hex_digests: pd.Series) -> pd.Series:
    """The first 64 bits of a hex SHA-256 as an unsigned integer: 8 bytes per complaint in
    memory instead of a 64-character string; enough to tell one text from its next version."""
    return pd.Series(
        [int(h[:16], 16) if isinstance(h, str) else 0 for h in hex_digests], index=hex_digests.index, dtype="uint64"
    )


def known_hashes(engine: Engine, ids: pd.Series) -> pd.DataFrame:
    """For the given complaint ids: short text hash, short details hash and the model name and
    version of the current tagging (ids not in the store are absent). Looked up by id in
    chunks, so memory follows the batch, not the store."""
    unique = pd.unique(ids.astype(str))
    columns = ["complaint_id", "text_sha256", "details_sha256", "model_name", "model_version"]
    rows = []
    with engine.connect() as conn:
        for chunk in in_chunks(unique.tolist()):
            query = (
                select(
                    complaints.c.complaint_id,
                    complaints.c.text_sha256,
                    complaints.c.details_sha256,
                    taggings.c.model_name,
                    taggings.c.model_version,
                )
                .select_from(
                    complaints.outerjoin(
                        taggings, (taggings.c.complaint_id == complaints.c.complaint_id) & taggings.c.is_current
                    )
                )
                .where(complaints.c.complaint_id.in_(chunk))
            )
            rows.extend(conn.execute(query).fetchall())
    frame = pd.DataFrame(rows, columns=columns)
    return pd.DataFrame(
        {
            "text_hash": short_hash(frame["text_sha256"]).to_numpy(),
            "details_hash": short_hash(frame["details_sha256"]).to_numpy(),
            "model_name": frame["model_name"].to_numpy(dtype=object),
            "model_version": frame["model_version"].to_numpy(dtype=object),
        },
        index=pd.Index(frame["complaint_id"].astype(str), name="complaint_id"),
    )


def stale_ids(engine: Engine, model_name: str, model_version: str, untagged_only: bool = False) -> list[str]:
    """Complaints whose current tag came from another model (or that have none)."""
    current = complaints.outerjoin(
        taggings, (taggings.c.complaint_id == complaints.c.complaint_id) & taggings.c.is_current
    )
    untagged = taggings.c.tagging_id.is_(None)
    where = (
        untagged
        if untagged_only
        else untagged | (taggings.c.model_name != model_name) | (taggings.c.model_version != model_version)
    )
    with engine.connect() as conn:
        return [
            r[0]
            for r in conn.execute(
                select(complaints.c.complaint_id).select_from(current).where(where).order_by(complaints.c.complaint_id)
            )
        ]


def read_complaints(engine: Engine, ids: list[str], columns: list[str]) -> pd.DataFrame:
    """The stored fields of the given complaints, in the order of ``ids``."""
    parts = []
    with engine.connect() as conn:
        for chunk in in_chunks(ids):
            result = conn.execute(
                select(*[complaints.c[c] for c in columns]).where(complaints.c.complaint_id.in_(chunk))
            )
            parts.append(pd.DataFrame(result.fetchall(), columns=columns))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return frame.set_index("complaint_id", drop=False).loc[ids].reset_index(drop=True)


def refresh_learning_status(engine: Engine, today: dt.date, due_soon_before: dt.date) -> int:
    """Move open learning stages to 'due soon' or 'overdue' as days pass, without re-reading
    exports: a complaint untouched for weeks still gets the right status tonight.

    ``due_soon_before`` is the first date more than 5 working days after ``today``.
    """
    status = case(
        (complaints.c.learning_deadline < today, "overdue"),
        (complaints.c.learning_deadline < due_soon_before, "due soon"),
        else_="open",
    )
    with engine.begin() as conn:
        # Only rows whose status moves are written: a read of the table, not a rewrite of it.
        result = conn.execute(
            update(complaints)
            .where(
                complaints.c.learning_deadline.is_not(None),
                complaints.c.learning_completed_date.is_(None),
                complaints.c.learning_status.is_distinct_from(status),
            )
            .values(learning_status=status)
        )
        return result.rowcount


COMPLAINT_FIELDS = [c.name for c in complaints.columns]


def _records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    return frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")


def write_batch(
    engine: Engine, rows: pd.DataFrame, tags: pd.DataFrame | None, run_id: str, model_name: str, model_version: str
) -> None:
    """Upsert complaints and (if given) add their new current taggings, in one transaction.

    ``rows`` has the complaint fields; ``tags`` (same order) the model's output for rows
    that were scored. Earlier taggings stay as history with ``is_current`` false.
    """
    ids = rows["complaint_id"].tolist()
    with engine.begin() as conn:
        existing = _existing(conn, ids)
        fresh = rows[~rows["complaint_id"].isin(existing)].assign(first_seen_run=run_id, updated_run=run_id)
        known = rows[rows["complaint_id"].isin(existing)].assign(updated_run=run_id)
        if len(fresh):
            conn.execute(insert(complaints), _records(fresh, [c for c in COMPLAINT_FIELDS if c in fresh.columns]))
        if len(known):
            fields = [c for c in COMPLAINT_FIELDS if c in known.columns and c not in ("complaint_id", "first_seen_run")]
            statement = (
                update(complaints)
                .where(complaints.c.complaint_id == bindparam("key"))
                .values({f: bindparam(f) for f in fields})
            )
            conn.execute(
                statement,
                [
                    {"key": r["complaint_id"], **{f: r[f] for f in fields}}
                    for r in _records(known, ["complaint_id", *fields])
                ],
            )
        if tags is not None and len(tags):
            scored_ids = tags["complaint_id"].tolist()
            for chunk in in_chunks(scored_ids):
                conn.execute(
                    update(taggings)
                    .where(taggings.c.complaint_id.in_(chunk), taggings.c.is_current)
                    .values(is_current=False)
                )
            stamp = now()
            records = _records(tags, ["complaint_id", "text_sha256", *TAGGING_FIELDS])
            for r in records:
                r.update(
                    is_current=True,
                    model_name=model_name,
                    model_version=model_version,
                    run_id=run_id,
                    tagged_at=stamp,
                    needs_review=bool(r["needs_review"]),
                    theme_confidence=float(r["theme_confidence"]),
                )
            conn.execute(insert(taggings), records)


def write_quarantine(engine: Engine, run_id: str, bad: pd.DataFrame, id_column: str = "complaint_id") -> None:
    if bad.empty:
        return
    stamp = now()
    records = [
        {
            "run_id": run_id,
            "source_file": r["_file"],
            "source_row": None if pd.isna(r["source_row"]) else int(r["source_row"]),
            "column_name": r["_column"],
            "reason": r["_reason"],
            "complaint_id": None if pd.isna(r.get(id_column)) else r.get(id_column),
            "created_at": stamp,
        }
        for r in bad.to_dict("records")
    ]
    with engine.begin() as conn:
        conn.execute(insert(quarantine), records)


def read_runs(engine: Engine, limit: int = 20) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(select(runs).order_by(runs.c.started_at.desc()).limit(limit)).fetchall()
    return pd.DataFrame(rows, columns=[c.name for c in runs.columns])


def _latest_correction():
    return (
        select(corrections.c.theme)
        .where(corrections.c.complaint_id == complaints.c.complaint_id)
        .order_by(corrections.c.correction_id.desc())
        .limit(1)
        .scalar_subquery()
        .label("analyst_theme")
    )


def _current_query():
    return select(
        complaints,
        _latest_correction(),
        *[
            taggings.c[c]
            for c in [
                "theme",
                "theme_confidence",
                "themes",
                "needs_review",
                "evidence",
                "feedback_type",
                "model_name",
                "model_version",
                "run_id",
            ]
        ],
    ).select_from(
        complaints.outerjoin(taggings, (taggings.c.complaint_id == complaints.c.complaint_id) & taggings.c.is_current)
    )


def current_columns() -> list[str]:
    return [c.name for c in _current_query().selected_columns]


def current_taggings(engine: Engine) -> pd.DataFrame:
    """Each complaint with its current tagging (for reports and exports)."""
    with engine.connect() as conn:
        result = conn.execute(_current_query())
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def iter_current_taggings(engine: Engine, chunk_rows: int = 50_000, run_id: str | None = None):
    """The same as :func:`current_taggings`, in chunks, so memory does not grow with the store;
    with ``run_id``, only the complaints that run added or updated."""
    query = _current_query()
    if run_id is not None:
        query = query.where(complaints.c.updated_run == run_id)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(query)
        columns = list(result.keys())
        while rows := result.fetchmany(chunk_rows):
            yield pd.DataFrame(rows, columns=columns)


def _stream(engine: Engine, query, chunk_rows: int):
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(query)
        columns = list(result.keys())
        while rows := result.fetchmany(chunk_rows):
            # As plain tuples: pandas probes each Row object's attributes, at twice the cost of the frame.
            yield pd.DataFrame([tuple(row) for row in rows], columns=columns)


def iter_labelled(engine: Engine, chunk_rows: int = 50_000):
    """Complaints a person has themed (in the export or by a correction), ordered by id, in
    chunks of complaint_id, text_redacted, human_theme, analyst_theme: selected by the
    database, so memory does not grow with the store."""
    corrected = select(corrections.c.complaint_id).where(corrections.c.complaint_id == complaints.c.complaint_id)
    themed = func.trim(func.coalesce(complaints.c.human_theme, "")) != ""
    query = (
        select(complaints.c.complaint_id, complaints.c.text_redacted, complaints.c.human_theme, _latest_correction())
        .where(themed | corrected.exists())
        .order_by(complaints.c.complaint_id)
    )
    yield from _stream(engine, query, chunk_rows)


def _to_review():
    """Current tags no person has themed yet (not in the export, not corrected)."""
    query = _current_query().where(taggings.c.theme.is_not(None))
    corrected = select(corrections.c.complaint_id).where(corrections.c.complaint_id == complaints.c.complaint_id)
    return query.where(~corrected.exists(), func.coalesce(complaints.c.human_theme, "") == "")


def unsure_to_review(engine: Engine, limit: int | None = None) -> pd.DataFrame:
    """Unsure tags to review, least confident first (then by id), up to ``limit``, by query."""
    query = _to_review().where(taggings.c.needs_review.is_(True))
    query = query.order_by(taggings.c.theme_confidence, complaints.c.complaint_id).limit(limit)
    return pd.concat([*_stream(engine, query, 50_000), pd.DataFrame(columns=current_columns())], ignore_index=True)


def confident_sample(engine: Engine, rng, size: int) -> pd.DataFrame:
    """``size`` confident tags to review drawn at random (positions in id order, as
    ``rng.choice`` picks them): the ids are streamed to draw from, then only the drawn rows read."""
    query = _to_review().where(taggings.c.needs_review.is_(False))
    ids = query.with_only_columns(complaints.c.complaint_id).order_by(complaints.c.complaint_id)
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    wanted = np.sort(rng.choice(total, min(size, total), replace=False))
    drawn, seen = [], 0
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(ids)
        while rows := result.fetchmany(100_000):
            here = wanted[(wanted >= seen) & (wanted < seen + len(rows))] - seen
            drawn += [rows[i][0] for i in here]
            seen += len(rows)
    chosen = query.where(complaints.c.complaint_id.in_(drawn)).order_by(complaints.c.complaint_id)
    return pd.concat([*_stream(engine, chosen, 50_000), pd.DataFrame(columns=current_columns())], ignore_index=True)


def learning_fingerprint_seen(engine: Engine, fingerprint: str) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(select(learning_updates).where(learning_updates.c.fingerprint == fingerprint)).first()
            is not None
        )


def write_learning(engine: Engine, run_id: str, fingerprint: str, points: pd.DataFrame, groups: pd.DataFrame) -> None:
    """Replace the stored learning points and groups with a new (redacted) grouping, in one
    transaction; a group keeps the run that first saw it, so bulletins can tell new groups."""
    point_fields = [c.name for c in learning_points.columns if c.name != "run_id"]
    group_fields = [c.name for c in learning_groups.columns if c.name not in ("run_id", "first_run")]
    with engine.begin() as conn:
        first = dict(conn.execute(select(learning_groups.c.group_id, learning_groups.c.first_run)).fetchall())
        conn.execute(delete(learning_points))
        conn.execute(delete(learning_groups))
        if len(points):
            records = _records(points.assign(position=points["position"].astype(int)), point_fields)
            conn.execute(insert(learning_points), [{**r, "run_id": run_id} for r in records])
        if len(groups):
            # A column the caller does not have (a frame from before representative_point) is stored empty.
            groups = groups.assign(recurring=groups["recurring"].astype(bool)).reindex(columns=group_fields)
            records = _records(groups, group_fields)
            conn.execute(
                insert(learning_groups),
                [{**r, "run_id": run_id, "first_run": first.get(int(r["group_id"]), run_id)} for r in records],
            )
        conn.execute(
            insert(learning_updates).values(
                fingerprint=fingerprint, run_id=run_id, updated_at=now(), points=len(points), groups=len(groups)
            )
        )


def read_learning(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(learning points, learning groups) as last written."""
    with engine.connect() as conn:
        points = conn.execute(select(learning_points))
        points = pd.DataFrame(points.fetchall(), columns=list(points.keys()))
        groups = conn.execute(select(learning_groups).order_by(learning_groups.c.group_id))
        groups = pd.DataFrame(groups.fetchall(), columns=list(groups.keys()))
    return points, groups


def record_bulletin(engine: Engine, groups_json: str) -> None:
    with engine.begin() as conn:
        conn.execute(insert(bulletins).values(created_at=now(), groups=groups_json))


def last_bulletin(engine: Engine) -> dict | None:
    """The latest bulletin's date and group counts, or None before the first."""
    with engine.connect() as conn:
        row = conn.execute(select(bulletins).order_by(bulletins.c.bulletin_id.desc()).limit(1)).first()
    return None if row is None else {"created_at": row.created_at, "groups": json.loads(row.groups or "{}")}


DATE_COLUMNS = (
    "received_date",
    "closed_date",
    "learning_deadline",
    "learning_completed_date",
    "acknowledgement_deadline",
    "acknowledged_date",
)


def _between_query(start: dt.date, end: dt.date, service: str | None, columns: list[str] | None):
    query = _current_query().where(complaints.c.received_date >= start, complaints.c.received_date <= end)
    if columns is not None:
        query = query.with_only_columns(*[c for c in query.selected_columns if c.name in columns])
    return query.where(complaints.c.service == service) if service else query


def iter_complaints_between(
    engine: Engine,
    start: dt.date,
    end: dt.date,
    service: str | None = None,
    columns: list[str] | None = None,
    chunk_rows: int = 50_000,
):
    """Complaints received from ``start`` to ``end`` (inclusive), with their current tagging,
    in chunks; only ``columns`` when given, so a reader gets the period's rows and the fields it
    needs, not the store. Date columns are ``datetime.date`` or None (never NaT), whatever the
    rows hold; each value that repeats (a date, a service, a theme) is held once, so a row
    costs a pointer a field instead of a Python object."""
    for chunk in _stream(engine, _between_query(start, end, service, columns), chunk_rows):
        yield _shared_values(chunk)


def _shared_values(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each column's repeated values pointing at one object (dates made
    ``datetime.date`` or None); columns of mostly distinct values (ids) are left as they are."""
    out = {}
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            out[column] = values
            continue
        codes, uniques = pd.factorize(values)
        if column not in DATE_COLUMNS and len(uniques) > len(values) // 2:
            out[column] = values
            continue
        uniques = np.asarray(uniques, dtype=object)
        if column in DATE_COLUMNS:
            dates = pd.to_datetime(pd.Series(uniques, dtype=object))
            uniques = np.asarray(pd.Series(dates.dt.date, dtype=object).where(dates.notna(), None), dtype=object)
        out[column] = pd.Series(np.append(uniques, None)[codes], dtype=object, index=frame.index)
    frame = pd.DataFrame(out, index=frame.index)
    for column in DATE_COLUMNS:  # a date column of only nulls reads as float
        if column in frame and frame[column].dtype != object:
            frame[column] = pd.Series([None] * len(frame), dtype=object, index=frame.index)
    return frame


def latest_received(engine: Engine, service: str | None = None) -> dt.date | None:
    """The latest received date in the store (of one service, if given), or None when empty."""
    query = select(func.max(complaints.c.received_date))
    if service:
        query = query.where(complaints.c.service == service)
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else pd.Timestamp(found).date()


def existing_complaints(engine: Engine, ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        return _existing(conn, ids)


def _existing(conn, ids: list[str]) -> set[str]:
    """Which of ``ids`` are stored complaints (on an open connection, inside its transaction)."""
    found: set[str] = set()
    for chunk in in_chunks(ids):
        found |= {
            r[0] for r in conn.execute(select(complaints.c.complaint_id).where(complaints.c.complaint_id.in_(chunk)))
        }
    return found


def people_theme(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(theme people gave each complaint, whether it is an analyst's correction): people decide,
    so the latest correction wins over the theme recorded in the export; blank when neither."""
    export = frame["human_theme"].fillna("").astype(str).str.strip()
    if "analyst_theme" not in frame:
        return export, pd.Series(False, index=frame.index)
    analyst = frame["analyst_theme"].fillna("").astype(str).str.strip()
    return analyst.where(analyst != "", export), analyst != ""


def in_chunks(ids: list, size: int = 500):
    """``ids`` in slices small enough for one SQL ``IN (...)`` on every database."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def latest_corrections(engine: Engine) -> pd.DataFrame:
    """complaint_id, theme, reviewer, corrected_at of each complaint's latest correction."""
    latest = (
        select(corrections.c.complaint_id, func.max(corrections.c.correction_id).label("last"))
        .group_by(corrections.c.complaint_id)
        .subquery()
    )
    query = select(
        corrections.c.complaint_id, corrections.c.theme, corrections.c.reviewer, corrections.c.corrected_at
    ).join(latest, corrections.c.correction_id == latest.c.last)
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def write_corrections(engine: Engine, rows: pd.DataFrame, reviewer: str, source_file: str) -> int:
    """Store analysts' themes (complaint_id, theme, source_row) in one transaction; a theme equal
    to the complaint's latest correction is not stored again, so re-importing a file is a no-op."""
    current = latest_corrections(engine).set_index("complaint_id")["theme"]
    fresh = rows[rows["theme"].to_numpy() != current.reindex(rows["complaint_id"]).to_numpy()]
    fresh = fresh.drop_duplicates("complaint_id", keep="last")
    if fresh.empty:
        return 0
    stamp = now()
    with engine.begin() as conn:
        conn.execute(
            insert(corrections),
            [
                {
                    "complaint_id": r["complaint_id"],
                    "theme": r["theme"],
                    "reviewer": reviewer,
                    "corrected_at": stamp,
                    "source_file": source_file,
                    "source_row": int(r["source_row"]),
                }
                for r in fresh.to_dict("records")
            ],
        )
    return len(fresh)


def record_alias_decision(engine: Engine, **values) -> None:
    with engine.begin() as conn:
        conn.execute(insert(alias_history).values(decided_at=now(), **values))


def read_alias_history(engine: Engine, model_name: str | None = None) -> pd.DataFrame:
    query = select(alias_history).order_by(alias_history.c.decision_id)
    if model_name:
        query = query.where(alias_history.c.model_name == model_name)
    with engine.connect() as conn:
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
