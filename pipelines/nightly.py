"""The nightly run: tag new and changed complaints from the drop folder into the results store.

Incremental and idempotent: a complaint is scored when it is new, when its text changed, or
(if so configured) when the champion model changed; a second run in a row scores nothing.
Crash-safe: complaints and their taggings are committed together in batches, so a run
killed at any point leaves the store consistent and the next run finishes the work exactly
once. A lock in the store stops two runs at once; a dead run's lock is recovered.

With no configuration it uses the bundled made-up sample in ``data/sample/``, a SQLite store
and the local MLflow store under the state folder, and trains a default model if none is
registered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipelines import store, tracking
from pipelines.config import Settings
from pipelines.datasets import FFT_CROSSWALK, DatasetError, dataset_path, sample_complaints_path, sha256_of
from pipelines.deadlines import acknowledgement_deadline, due_soon_before, learning_stage
from pipelines.score import scored_in_order, split_unknown_types
from pipelines.tables import ROW, RowChecks, SqlTable, TableWriter, iter_chunks
from pipelines.taxonomy import Taxonomy
from pipelines.text import as_text, normalise, redact

log = logging.getLogger(__name__)

EXPORT_SUFFIXES = {".csv", ".xlsx", ".parquet"}
EXIT_OK, EXIT_FAILURE, EXIT_QUARANTINED, EXIT_LOCKED = 0, 1, 3, 4
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


@dataclass
class NightlySummary:
    run_id: str
    model_uri: str
    model_version: str
    trained_default: bool
    counts: dict = field(default_factory=dict)
    quarantine_file: Path | None = None
    seconds: float = 0.0
    report_error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.report_error:
            return EXIT_FAILURE
        return EXIT_QUARANTINED if self.counts.get("quarantined") else EXIT_OK


def train_default_model(settings: Settings, engine=None) -> None:
    """Train and register the default council model: the council's labelled complaints in the
    store (if any) on top of the public FFT data through the crosswalk and the taxonomy's
    examples; without labels, the public data and examples; without the public data, the
    bundled made-up sample (a demo model, not a useful one)."""
    from pipelines.tables import InputError
    from pipelines.taxonomy import TaxonomyError
    from pipelines.train import assemble_training_set, train

    try:
        source = dataset_path("nhs_fft_phase1.csv", settings.public_data)
    except DatasetError:
        log.warning("public FFT data not found; training a demo model on the made-up sample")
        train(
            sample_complaints_path(settings.data_dir),
            "text",
            "theme",
            taxonomy_path=settings.taxonomy_path,
            register=settings.model_name,
            settings=settings,
        )
        return
    try:
        own, _ = assemble_training_set(engine, settings) if engine is not None else (None, "")
    except InputError:  # nothing labelled in the store yet
        own = None
    if own is not None:
        log.info("training default model on the store's labelled complaints plus the public FFT data")
        try:
            train(own, "text", "theme", taxonomy_path=settings.taxonomy_path, add_public_data=True,
                  register=settings.model_name, settings=settings)  # fmt: skip
            return
        except TaxonomyError as err:  # an export's theme the taxonomy does not know
            log.warning("store labels not usable; public data only", extra={"fields": {"reason": str(err)[:200]}})
    log.info("training default model on public FFT data through the crosswalk")
    train(
        source,
        "feedback",
        "code",
        crosswalk_path=settings.data_dir / FFT_CROSSWALK,
        register=settings.model_name,
        settings=settings,
    )


def _sha256(values: pd.Series) -> pd.Series:
    return values.map(lambda v: hashlib.sha256(v.encode("utf-8")).hexdigest())


def _parse_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(dates, bad mask): ISO (YYYY-MM-DD) or UK day-first (DD/MM/YYYY); blank is not bad."""
    text = values.fillna("").astype(str).str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    rest = parsed.isna() & (text != "")
    if rest.any():
        parsed[rest] = pd.to_datetime(text[rest], errors="coerce", format="%d/%m/%Y")
    return parsed.dt.date, parsed.isna() & (text != "")


def exports_in(folder: Path) -> list[Path]:
    """Export files, oldest first (by modification time, then name): later exports win."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in EXPORT_SUFFIXES and not p.name.startswith((".", "~$"))]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


class ExportReader:
    """Reads complaint exports into store rows, quarantining rows that cannot be used."""

    def __init__(self, settings: Settings):
        self.columns = {**settings.export_columns}
        self.settings = settings
        # Quarantined rows keep every export column the job knows, with where and why.
        # Malformed CSV records keep their lines and raw text ("_lines", "_raw") to be corrected.
        self.quarantine_columns = [
            "_file",
            ROW,
            "_lines",
            "_column",
            "_reason",
            *dict.fromkeys(self.columns.values()),
            "_raw",
        ]
        # A stated feedback type must be one of the taxonomy's (empty: unknown, the model decides).
        self.feedback_types = Taxonomy.from_file(settings.taxonomy_path).feedback_type_of()

    def chunks(self, source: Path | SqlTable):
        """(good store rows, quarantined rows) per chunk of one export file or database table."""
        cols = self.columns
        required = [cols["complaint_id"], cols["text"], cols["received_date"]]
        path = source.name if isinstance(source, SqlTable) else str(source)
        checks = RowChecks(path, cols["text"], cols["complaint_id"], self.settings.max_text_chars)
        chunks = (
            source.iter_chunks(self.settings.chunk_rows, required)
            if isinstance(source, SqlTable)
            else iter_chunks(source, self.settings.chunk_rows, required)
        )
        type_column = cols["feedback_type_given"]
        for chunk in chunks:
            good, bad = checks.split(chunk)
            if type_column in good.columns:
                good, bad_type = split_unknown_types(good, type_column, self.feedback_types, path)
                bad = pd.concat([bad, bad_type]) if len(bad_type) else bad
            rows = pd.DataFrame({"source_row": good[ROW].to_numpy()}, index=good.index)
            for target, source in cols.items():
                rows[target] = good[source].fillna("").astype(str).str.strip() if source in good.columns else ""
            bad_parts = [bad]
            for date_field in DATE_FIELDS:
                parsed, invalid = _parse_dates(rows[date_field])
                if invalid.any():
                    column = cols[date_field]
                    reasons = (
                        f"{column} "
                        + ("'" + rows.loc[invalid, date_field] + "'")
                        + " is not a date (expected YYYY-MM-DD or DD/MM/YYYY)"
                    )
                    bad_parts.append(good[invalid].assign(_reason=reasons, _column=column, _file=str(path)))
                    rows, good = rows[~invalid], good[~invalid]
                    parsed = parsed[~invalid]
                rows[date_field] = parsed
            missing_received = rows["received_date"].isna()
            if missing_received.any():
                bad_parts.append(
                    good[missing_received].assign(
                        _reason="missing received date", _column=cols["received_date"], _file=str(path)
                    )
                )
                rows = rows[~missing_received]
            bad_all = (
                pd.concat([b for b in bad_parts if len(b)], ignore_index=True)
                if any(len(b) for b in bad_parts)
                else bad
            )
            yield (
                rows.assign(source_file=Path(path).name if isinstance(source, Path) else path).reset_index(drop=True),
                bad_all.reindex(columns=self.quarantine_columns),
            )


def _prepare(rows: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """Store fields: hashes, redacted text, deadlines."""
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


def sources_to_read(settings: Settings, engine) -> tuple[list, dict[str, str], list[str]]:
    """(sources to read tonight, fingerprint of every export, names of exports skipped).

    An export whose content a finished run has already processed is skipped: it holds nothing
    new, and re-reading it would re-quarantine its bad rows every night. A database table is
    always read (its content hashes tell what changed)."""
    drop = settings.drop_folder or sample_complaints_path(settings.data_dir).parent
    exports = exports_in(Path(drop))
    fingerprints = {p.name: sha256_of(p) for p in exports}
    done = store.processed_exports(engine)
    skipped = [p.name for p in exports if fingerprints[p.name] in done]
    sources: list = [p for p in exports if fingerprints[p.name] not in done]
    if settings.source_url:
        sources.append(SqlTable(settings.source_url, settings.source_table, settings.export_columns["complaint_id"]))
    return sources, fingerprints, skipped


def run_nightly(settings: Settings, progress: bool = True, today: dt.date | None = None) -> NightlySummary:
    """Tag new and changed complaints from the drop folder (and database table, if configured)
    into the store, refresh learning-stage statuses, regroup learning when the reviews
    changed, then record the run.

    Raises :class:`pipelines.store.LockHeld` when another run is in progress.
    """
    today = today or dt.date.today()
    started = time.monotonic()
    engine = store.connect(settings.store)
    run_id = f"{dt.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    recovered = store.acquire_lock(engine, run_id)
    if recovered:
        log.warning("recovered the lock of a run that died", extra={"fields": {"dead_run": recovered}})
    counts = dict.fromkeys(["rows_read", "new", "changed", "updated", "scored", "quarantined", "unchanged"], 0)
    summary = None
    try:
        found = tracking.champion(settings)
        trained = found is None
        if trained:
            train_default_model(settings, engine)
            found = tracking.champion(settings)
        model_uri, model_version = found
        model_path = tracking.resolve_model(model_uri, settings)
        sources, fingerprints, skipped = sources_to_read(settings, engine)
        store.start_run(engine, run_id, model_uri, model_version, fingerprints)
        if skipped:
            log.info("exports already processed, skipped", extra={"fields": {"files": len(skipped)}})
        summary = NightlySummary(run_id, model_uri, model_version, trained)
        quarantine_path = settings.output_dir / f"quarantine-{run_id}.csv"
        quarantine_file = TableWriter(quarantine_path, private=True)
        reader = ExportReader(settings)
        latest = _latest_source_of_each_complaint(reader, sources)
        bar = tqdm(unit="complaints", disable=not progress, desc="nightly", mininterval=1.0)

        def changed_batches():
            """Batches of complaints that are new or whose text changed, across all sources; on
            the way, quarantine bad rows and update complaints whose details alone changed."""
            pending: list[pd.DataFrame] = []
            for index, source in enumerate(sources):
                for rows, bad in reader.chunks(source):
                    counts["rows_read"] += len(rows) + len(bad)
                    if len(bad):
                        counts["quarantined"] += len(bad)
                        store.write_quarantine(engine, run_id, bad, reader.columns["complaint_id"])
                        quarantine_file.write(bad)
                    # A complaint in several sources is taken from the latest only, so each
                    # complaint is looked at once per run.
                    if len(sources) > 1:
                        rows = rows[latest.reindex(_id_hashes(rows["complaint_id"])).to_numpy() == index]
                    if rows.empty:
                        continue
                    rows = _prepare(rows, today)
                    before = store.known_hashes(engine, rows["complaint_id"]).reindex(rows["complaint_id"])
                    is_new = before["text_hash"].isna().to_numpy()
                    text_hash = store.short_hash(rows["text_sha256"]).to_numpy()
                    details_hash = store.short_hash(rows["details_sha256"]).to_numpy()
                    text_changed = ~is_new & (before["text_hash"].to_numpy() != text_hash)
                    details_changed = ~is_new & (before["details_hash"].to_numpy() != details_hash)
                    to_score = is_new | text_changed
                    counts["new"] += int(is_new.sum())
                    counts["changed"] += int(text_changed.sum())
                    counts["unchanged"] += int((~to_score & ~details_changed).sum())
                    only_details = rows[~to_score & details_changed]
                    counts["updated"] += len(only_details)
                    if len(only_details):
                        only_details = only_details.assign(text_redacted=redact(only_details["text"].tolist()))
                        store.write_batch(engine, only_details, None, run_id, settings.model_name, model_version)
                    pending.append(rows[to_score])
                    while sum(len(p) for p in pending) >= settings.batch_rows:
                        merged = pd.concat(pending, ignore_index=True)
                        pending = [merged.iloc[settings.batch_rows :]]
                        yield _with_redacted(merged.iloc[: settings.batch_rows])
            rest = pd.concat(pending, ignore_index=True) if pending else pd.DataFrame()
            if len(rest):
                yield _with_redacted(rest)

        def score_into_store(batches):
            # One pool of scoring workers per pass (each holds one copy of the model).
            for batch, tags in _scored(batches, model_path, settings):
                tags = tags.assign(
                    complaint_id=batch["complaint_id"].to_numpy(), text_sha256=batch["text_sha256"].to_numpy()
                )
                store.write_batch(engine, batch, tags, run_id, settings.model_name, model_version)
                counts["scored"] += len(batch)
                bar.update(len(batch))

        score_into_store(changed_batches())
        # Then complaints tagged by an earlier champion (or never tagged), from the store's own
        # redacted text: exports already processed need not be read again.
        stale = store.stale_ids(
            engine, settings.model_name, model_version, untagged_only=settings.retag_on_model_change == "new"
        )
        if stale:
            log.info("re-tagging with the new champion", extra={"fields": {"complaints": len(stale)}})
            score_into_store(
                store.read_complaints(
                    engine,
                    stale[i : i + settings.batch_rows],
                    ["complaint_id", "text_redacted", "text_sha256", "feedback_type_given"],
                )
                for i in range(0, len(stale), settings.batch_rows)
            )
        bar.close()
        quarantine_file.close()
        refreshed = store.refresh_learning_status(engine, today, due_soon_before(today))
        log.info("learning-stage statuses refreshed", extra={"fields": {"complaints": refreshed}})
        update_learning(settings, engine, run_id)
        summary.counts = counts
        summary.quarantine_file = quarantine_path if counts["quarantined"] else None
        _write_outputs(engine, settings, summary, today)
        summary.seconds = time.monotonic() - started
        # The exports were wholly processed even when the reports failed: mark them read either way.
        read_files = {p.name: fingerprints[p.name] for p in sources if isinstance(p, Path)}
        store.finish_run(
            engine, run_id, _ledger_status(summary), counts, summary.seconds, summary.report_error or "", read_files
        )
        log.info(
            "nightly run finished", extra={"fields": {"run_id": run_id, **counts, "seconds": round(summary.seconds, 1)}}
        )
        return summary
    except BaseException as err:
        if summary is not None:
            store.finish_run(
                engine, run_id, "failed", counts, time.monotonic() - started, f"{type(err).__name__}: {err}"[:500]
            )
        raise
    finally:
        store.release_lock(engine, run_id)


def _write_outputs(engine, settings: Settings, summary: NightlySummary, today: dt.date) -> None:
    """Tonight's changes file and the reports; a report failure is noted in the summary, not
    raised: the tagging is committed."""
    # Tonight's changes only: a full export of a large store costs more than the run itself
    # (`python cli.py export` writes the whole store on demand).
    export_current(engine, settings.output_dir / "changes" / f"taggings-{summary.run_id}.csv", summary.run_id)
    try:
        from pipelines.reports import run_reports

        run_reports(settings, settings.output_dir / "reports", today=today, record_bulletin=False, engine=engine)
    except Exception as err:  # noqa: BLE001 - the tagging is committed; say the reports failed
        summary.report_error = f"{type(err).__name__}: {err}"
        log.error("reports failed", extra={"fields": {"error": summary.report_error[:300]}})


def _ledger_status(summary: NightlySummary) -> str:
    """What the ledger says of a run: a report failure is a failure, whatever else happened."""
    if summary.report_error:
        return "reports failed"
    return "quarantined rows" if summary.counts.get("quarantined") else "success"


def reviews_source(settings: Settings) -> Path | None:
    """The configured reviews; with no configuration at all, the bundled made-up sample."""
    if settings.reviews_source:
        return settings.reviews_source
    sample = sample_complaints_path(settings.data_dir).parent / "reviews"
    return sample if settings.drop_folder is None and sample.is_dir() else None


def reviews_fingerprint(source: Path, seed_themes: Path | None) -> str:
    """sha256 over the reviews' files (names and contents) and the seed themes."""
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    if seed_themes:
        files.append(seed_themes)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\x1f{sha256_of(path)}\n".encode())
    return digest.hexdigest()


def update_learning(settings: Settings, engine, run_id: str) -> bool:
    """Regroup the learning points when the reviews changed since the last update; the saved
    grouping keeps group ids stable. Returns whether it ran."""
    from pipelines.learning import group_reviews, log_grouping, write_learning_files

    source = reviews_source(settings)
    if source is None:
        return False
    fingerprint = reviews_fingerprint(source, settings.reviews_seed_themes)
    if store.learning_fingerprint_seen(engine, fingerprint):
        log.info("reviews unchanged; learning groups kept")
        return False
    cols = settings.reviews_columns
    grouping_dir = settings.state / "learning" / "grouping"
    points, groups, problems = group_reviews(
        source,
        grouping_dir,
        settings.reviews_seed_themes,
        cols.get("id", "id"),
        cols.get("text", "text"),
        cols.get("date", "date"),
        cols.get("team", "team"),
        cols.get("name"),
        settings.random_state,
        encoder_dir=settings.encoder_dir,
    )
    out = settings.output_dir
    summary = write_learning_files(points, groups, problems, out / "learning_points.csv", out / "learning_groups.csv")
    store.write_learning(engine, run_id, fingerprint, points, groups)
    log_grouping(grouping_dir, summary, settings)
    log.info(
        "learning groups updated",
        extra={"fields": {"points": summary.points, "groups": summary.groups, "recurring": summary.recurring_groups}},
    )
    return True


def _scored(batches, model_path: str, settings: Settings):
    """(batch, tags) pairs from the scoring workers; the model is never loaded in this process,
    whose own work (reading, redacting, storing) keeps it busy: one copy of the model fewer."""
    n_jobs = max(1, settings.n_jobs)
    return scored_in_order(batches, model_path, "text_redacted", n_jobs, "feedback_type_given", main_scores=False)


def _with_redacted(rows: pd.DataFrame) -> pd.DataFrame:
    """Redact only what is written: the store keeps redacted text, never the original."""
    rows = rows.reset_index(drop=True)
    return rows.assign(text_redacted=redact(rows["text"].tolist()))


def _id_hashes(ids: pd.Series) -> np.ndarray:
    """64-bit hashes of complaint ids: 8 bytes an id in memory instead of a Python string."""
    return pd.util.hash_array(ids.astype(str).to_numpy(dtype=object))


def _latest_source_of_each_complaint(reader: ExportReader, sources: list) -> pd.Series:
    """Id hash -> index of the latest source holding that complaint. With one source there is
    nothing to decide (duplicates within a source are quarantined), so nothing is read twice."""
    if len(sources) <= 1:
        return pd.Series(dtype="int64")
    hashes, where = [], []
    for index, source in enumerate(sources):
        for rows, _ in reader.chunks(source):
            hashes.append(_id_hashes(rows["complaint_id"]))
            where.append(np.full(len(rows), index, dtype=np.int32))
    if not hashes:
        return pd.Series(dtype="int64")
    return pd.Series(np.concatenate(where)).groupby(np.concatenate(hashes)).max()


def export_current(engine, path: Path, run_id: str | None = None) -> Path:
    """The store's current tagging of every complaint (or only those ``run_id`` added or
    updated) as CSV or Parquet (text redacted, CSV formulas neutralised), streamed in chunks."""
    writer = TableWriter(path)
    columns = [c for c in store.current_columns() if c not in ("text_sha256", "details_sha256")]
    for chunk in store.iter_current_taggings(engine, run_id=run_id):
        writer.write(chunk[columns])
    writer.close(empty_columns=columns)
    return path


def store_snapshot(engine) -> pd.DataFrame:
    """Complaints with their current tagging, without run ids and timestamps: two runs that did
    the same work give equal snapshots (used to prove crash safety)."""
    frame = store.current_taggings(engine).drop(columns=["first_seen_run", "updated_run", "run_id"], errors="ignore")
    frame["theme_confidence"] = frame["theme_confidence"].round(9)
    return frame.sort_values("complaint_id").reset_index(drop=True)
