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
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

SCHEMA_VERSION = 1
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
        return found.version


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


def finish_run(engine: Engine, run_id: str, status: str, counts: dict, seconds: float, message: str = "") -> None:
    with engine.begin() as conn:
        conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id)
            .values(status=status, finished_at=now(), seconds=seconds, message=message, **counts)
        )


def short_hash(hex_digests: pd.Series) -> pd.Series:
    """The first 64 bits of a hex SHA-256 as an unsigned integer: 8 bytes per complaint in
    memory instead of a 64-character string; enough to tell one text from its next version."""
    return pd.Series(
        [int(h[:16], 16) if isinstance(h, str) else 0 for h in hex_digests], index=hex_digests.index, dtype="uint64"
    )


def known_hashes(engine: Engine) -> pd.DataFrame:
    """complaint_id -> short text hash, short details hash and the model version of its current tagging."""
    query = select(
        complaints.c.complaint_id, complaints.c.text_sha256, complaints.c.details_sha256, taggings.c.model_version
    ).select_from(
        complaints.outerjoin(taggings, (taggings.c.complaint_id == complaints.c.complaint_id) & taggings.c.is_current)
    )
    parts = []
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(query)
        while rows := result.fetchmany(100_000):
            frame = pd.DataFrame(rows, columns=["complaint_id", "text_sha256", "details_sha256", "model_version"])
            parts.append(
                pd.DataFrame(
                    {
                        "text_hash": short_hash(frame["text_sha256"]).to_numpy(),
                        "details_hash": short_hash(frame["details_sha256"]).to_numpy(),
                        "model_version": pd.Categorical(frame["model_version"]),
                    },
                    index=pd.Index(frame["complaint_id"], name="complaint_id"),
                )
            )
    if not parts:
        return pd.DataFrame(
            {
                "text_hash": pd.Series(dtype="uint64"),
                "details_hash": pd.Series(dtype="uint64"),
                "model_version": pd.Series(dtype="category"),
            },
            index=pd.Index([], name="complaint_id"),
        )
    known = pd.concat(parts)
    known["model_version"] = known["model_version"].astype("category")
    return known


COMPLAINT_FIELDS = [c.name for c in complaints.columns]
TAGGING_FIELDS = ["theme", "theme_confidence", "themes", "needs_review", "evidence", "feedback_type"]


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
        existing = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            existing |= {
                r[0]
                for r in conn.execute(select(complaints.c.complaint_id).where(complaints.c.complaint_id.in_(chunk)))
            }
        fresh = rows[~rows["complaint_id"].isin(existing)].assign(first_seen_run=run_id, updated_run=run_id)
        known = rows[rows["complaint_id"].isin(existing)].assign(updated_run=run_id)
        if len(fresh):
            conn.execute(insert(complaints), _records(fresh, [c for c in COMPLAINT_FIELDS if c in fresh.columns]))
        if len(known):
            fields = [c for c in COMPLAINT_FIELDS if c in known.columns and c not in ("complaint_id", "first_seen_run")]
            from sqlalchemy import bindparam

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
            for start in range(0, len(scored_ids), 500):
                chunk = scored_ids[start : start + 500]
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


def _current_query():
    return select(
        complaints,
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


def current_taggings(engine: Engine) -> pd.DataFrame:
    """Each complaint with its current tagging (for reports and exports)."""
    with engine.connect() as conn:
        result = conn.execute(_current_query())
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))


def iter_current_taggings(engine: Engine, chunk_rows: int = 50_000):
    """The same as :func:`current_taggings`, in chunks, so memory does not grow with the store."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(_current_query())
        columns = list(result.keys())
        while rows := result.fetchmany(chunk_rows):
            yield pd.DataFrame(rows, columns=columns)
