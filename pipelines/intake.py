"""Intake: complaint exports and the source table read into store rows, and what changed.

Reading and validation (bad rows quarantined with file, row, column and reason), preparing
rows (hashes, deadlines) and the change rule, which is a pure function of the rows and the
hashes the store already holds: so it can be tested without a store or a model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import Settings
from pipelines.datasets import sample_complaints_path, sha256_of
from pipelines.deadlines import acknowledgement_deadline, learning_stage
from pipelines.store import short_hash
from pipelines.tables import ROW, RowChecks, SeenIds, SqlTable, iter_chunks, parse_dates
from pipelines.taxonomy import Taxonomy
from pipelines.text import as_text, normalise

EXPORT_SUFFIXES = {".csv", ".xlsx", ".parquet"}
DATE_FIELDS = ["received_date", "closed_date", "learning_completed_date", "acknowledged_date"]
DETAIL_FIELDS = [
    "received_date",
    "closed_date",
    "service",
    "outcome",
    "ombudsman_referral",
    "human_theme",
    "feedback_type_given",
    "learning_completed_date",
]


def exports_in(folder: Path) -> list[Path]:
    """Export files, oldest first (by modification time, then name): later exports win."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in EXPORT_SUFFIXES and not p.name.startswith((".", "~$"))]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def sources_to_read(settings: Settings, processed: set[str]) -> tuple[list, dict[str, str], list[str]]:
    """(sources to read tonight, fingerprint of every export, names of exports skipped).

    An export whose fingerprint is in ``processed`` (a finished run read it) is skipped: it
    holds nothing new, and re-reading it would re-quarantine its bad rows every night. A
    database table is always read (its content hashes tell what changed)."""
    drop = settings.drop_folder or sample_complaints_path(settings.data_dir).parent
    exports = exports_in(Path(drop))
    fingerprints = {p.name: sha256_of(p) for p in exports}
    skipped = [p.name for p in exports if fingerprints[p.name] in processed]
    sources: list = [p for p in exports if fingerprints[p.name] not in processed]
    if settings.source_url:
        sources.append(SqlTable(settings.source_url, settings.source_table, settings.export_columns["complaint_id"]))
    return sources, fingerprints, skipped


class ExportReader:
    """Reads complaint exports into store rows, quarantining rows that cannot be used."""

    def __init__(self, settings: Settings):
        self.columns = {**settings.export_columns}
        self.settings = settings
        # Quarantined rows keep every export column the job knows, with where and why.
        # Malformed CSV records keep their lines and raw text ("_lines", "_raw") to be corrected.
        self.quarantine_columns = ["_file", ROW, "_lines", "_column", "_reason", *dict.fromkeys(self.columns.values()), "_raw"]  # fmt: skip
        # A stated feedback type must be one of the taxonomy's (empty: unknown, the model decides).
        self.feedback_types = Taxonomy.from_file(settings.taxonomy_path).feedback_type_of()

    def chunks(self, source: Path | SqlTable):
        """(good store rows, quarantined rows) per chunk of one export file or database table."""
        cols = self.columns
        required = [cols["complaint_id"], cols["text"], cols["received_date"]]
        path = source.name if isinstance(source, SqlTable) else str(source)
        types = (cols["feedback_type_given"], self.feedback_types)
        checks = RowChecks(path, cols["text"], cols["complaint_id"], self.settings.max_text_chars, types)
        chunks = (
            source.iter_chunks(self.settings.chunk_rows, required)
            if isinstance(source, SqlTable)
            else iter_chunks(source, self.settings.chunk_rows, required)
        )
        name = Path(path).name if isinstance(source, Path) else path
        for chunk in chunks:
            good, bad = checks.split(chunk)
            rows, bad_dates = self._dated(good, path)
            bad_all = pd.concat([b for b in (bad, bad_dates) if len(b)], ignore_index=True) if len(bad_dates) else bad
            yield rows.assign(source_file=name).reset_index(drop=True), bad_all.reindex(columns=self.quarantine_columns)

    def _dated(self, good: pd.DataFrame, path: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Store rows with parsed dates, and the rows whose dates are unusable, with the reason."""
        cols = self.columns
        rows = pd.DataFrame({"source_row": good[ROW].to_numpy()}, index=good.index)
        for target, source in cols.items():
            rows[target] = good[source].fillna("").astype(str).str.strip() if source in good.columns else ""
        bad_parts = []
        for date_field in DATE_FIELDS:
            parsed, invalid = parse_dates(rows[date_field])
            if invalid.any():
                column = cols[date_field]
                reasons = f"{column} '" + rows.loc[invalid, date_field] + "' is not a date (expected YYYY-MM-DD or DD/MM/YYYY)"  # fmt: skip
                bad_parts.append(good[invalid].assign(_reason=reasons, _column=column, _file=path))
                rows, good, parsed = rows[~invalid], good[~invalid], parsed[~invalid]
            rows[date_field] = parsed
        missing = rows["received_date"].isna()
        if missing.any():
            bad_parts.append(good[missing].assign(_reason="missing received date", _column=cols["received_date"], _file=path))  # fmt: skip
            rows = rows[~missing]
        return rows, (pd.concat(bad_parts, ignore_index=True) if bad_parts else pd.DataFrame())


class LatestSource:
    """Sources read newest first, so a complaint in several is taken from the latest only and
    each complaint is looked at once per run, in one pass over the sources."""

    def __init__(self, sources: list):
        self.sources = sources
        self._seen = SeenIds()
        self._count = 0

    def newest_first(self):
        return list(reversed(self.sources))

    def keep(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows whose complaint no later source held (with one source: all of them)."""
        if len(self.sources) <= 1 or rows.empty:
            return rows
        own = np.arange(self._count, self._count + len(rows))
        self._count += len(rows)
        first = self._seen.first_rows(rows["complaint_id"].astype(str).to_numpy(dtype=object), own)
        return rows[first == own]


def _sha256(values: pd.Series) -> pd.Series:
    return values.map(lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest())


def prepare(rows: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """Store fields: hashes of the text and of the details, learning-stage and acknowledgement deadlines."""
    normalised = rows["text"].map(normalise)
    parts = [rows[f].map(as_text) for f in DETAIL_FIELDS]
    details = parts[0].str.cat(parts[1:], sep="\x1f")  # column-wise: a row-wise join is 50x slower
    # Added later: appended only when given, so stores written before keep their details hashes.
    acknowledged = rows["acknowledged_date"].map(as_text)
    details = details.where(acknowledged == "", details + "\x1facknowledged " + acknowledged)
    stage = learning_stage(rows["closed_date"].to_numpy(), rows["learning_completed_date"].to_numpy(), today)
    return rows.assign(
        text_sha256=_sha256(normalised).to_numpy(),
        details_sha256=_sha256(details).to_numpy(),
        learning_deadline=stage["learning_deadline"].to_numpy(),
        learning_status=stage["learning_status"].to_numpy(),
        acknowledgement_deadline=acknowledgement_deadline(rows["received_date"].to_numpy()).to_numpy(),
    )


@dataclass
class Changes:
    """What tonight's rows are: to score (new, or text changed), to update (details alone
    changed), and how many of each kind, unchanged included."""

    to_score: pd.DataFrame
    details_only: pd.DataFrame
    counts: dict


def classify(rows: pd.DataFrame, known: pd.DataFrame) -> Changes:
    """The change rule: ``rows`` are prepared (:func:`prepare`); ``known`` holds the store's
    short ``text_hash`` and ``details_hash`` indexed by complaint id (unknown ids absent).
    new or text changed -> scored; only the details changed -> updated; else unchanged."""
    before = known.reindex(rows["complaint_id"])
    is_new = before["text_hash"].isna().to_numpy()
    text_changed = ~is_new & (before["text_hash"].to_numpy() != short_hash(rows["text_sha256"]).to_numpy())
    details_changed = ~is_new & (before["details_hash"].to_numpy() != short_hash(rows["details_sha256"]).to_numpy())
    to_score = is_new | text_changed
    details_only = ~to_score & details_changed
    counts = {
        "new": int(is_new.sum()),
        "changed": int(text_changed.sum()),
        "updated": int(details_only.sum()),
        "unchanged": int((~to_score & ~details_changed).sum()),
    }
    return Changes(rows[to_score], rows[details_only], counts)
