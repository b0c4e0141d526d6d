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

import pandas as pd
from tqdm import tqdm

from pipelines import store, tracking
from pipelines.config import Settings
from pipelines.datasets import FFT_CROSSWALK, DatasetError, dataset_path, sample_complaints_path, sha256_of
from pipelines.deadlines import due_soon_before
from pipelines.intake import ExportReader, LatestSource, classify, prepare, sources_to_read
from pipelines.score import scored_in_order
from pipelines.tables import TableWriter
from pipelines.text import redact

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_QUARANTINED, EXIT_LOCKED = 0, 1, 3, 4
COUNTS = ["rows_read", "new", "changed", "updated", "scored", "quarantined", "unchanged"]


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
        own, _ = assemble_training_set(engine) if engine is not None else (None, "")
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


def run_nightly(settings: Settings, progress: bool = True, today: dt.date | None = None) -> NightlySummary:
    """Tag new and changed complaints from the drop folder (and database table, if configured)
    into the store, refresh learning-stage statuses, regroup learning when the reviews
    changed, then record the run.

    Raises :class:`pipelines.store.LockHeld` when another run is in progress.
    """
    started = time.monotonic()
    engine = store.connect(settings.store)
    night = Night(
        settings, engine, f"{dt.datetime.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}", today or dt.date.today()
    )
    recovered = store.acquire_lock(engine, night.run_id)
    if recovered:
        log.warning("recovered the lock of a run that died", extra={"fields": {"dead_run": recovered}})
    summary = None
    try:
        trained = _use_champion(night)
        sources, fingerprints, skipped = sources_to_read(settings, store.processed_exports(engine))
        store.start_run(engine, night.run_id, night.model_uri, night.model_version, fingerprints)
        if skipped:
            log.info("exports already processed, skipped", extra={"fields": {"files": len(skipped)}})
        summary = NightlySummary(night.run_id, night.model_uri, night.model_version, trained, night.counts)
        quarantine_path = settings.output_dir / f"quarantine-{night.run_id}.csv"
        _tag(night, sources, TableWriter(quarantine_path, private=True), progress)
        summary.quarantine_file = quarantine_path if night.counts["quarantined"] else None
        _after_tagging(night, summary)
        summary.seconds = time.monotonic() - started
        # The exports were wholly processed even when the reports failed: mark them read either way.
        read_files = {p.name: fingerprints[p.name] for p in sources if isinstance(p, Path)}
        store.finish_run(engine, night.run_id, _ledger_status(summary), night.counts, summary.seconds,
                         summary.report_error or "", read_files)  # fmt: skip
        log.info("nightly run finished",
                 extra={"fields": {"run_id": night.run_id, **night.counts, "seconds": round(summary.seconds, 1)}})  # fmt: skip
        return summary
    except BaseException as err:
        if summary is not None:
            store.finish_run(engine, night.run_id, "failed", night.counts, time.monotonic() - started,
                             f"{type(err).__name__}: {err}"[:500])  # fmt: skip
        raise
    finally:
        store.release_lock(engine, night.run_id)


@dataclass
class Night:
    """One run's context: its store, id and day, the champion it tags with, what it counted."""

    settings: Settings
    engine: object
    run_id: str
    today: dt.date
    model_uri: str = ""
    model_version: str = ""
    model_path: str = ""
    counts: dict = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))


def _use_champion(night: Night) -> bool:
    """Tag with the registry's champion, training a default model first if there is none
    (returns whether it trained)."""
    found = tracking.champion(night.settings)
    trained = found is None
    if trained:
        train_default_model(night.settings, night.engine)
        found = tracking.champion(night.settings)
    night.model_uri, night.model_version = found
    night.model_path = tracking.resolve_model(night.model_uri, night.settings)
    return trained


def _tag(night: Night, sources: list, quarantine: TableWriter, progress: bool) -> None:
    """Score what changed in tonight's sources, then what an earlier champion tagged; each
    batch is committed with its complaints, so a run killed at any point loses nothing."""
    with tqdm(unit="complaints", disable=not progress, desc="nightly", mininterval=1.0) as bar:
        _score_into_store(night, _batches(_changed_rows(night, sources, quarantine), night.settings.batch_rows), bar)
        # Then complaints tagged by an earlier champion (or never tagged), from the store's own
        # redacted text: exports already processed need not be read again.
        stale = store.stale_ids(night.engine, night.settings.model_name, night.model_version,
                                untagged_only=night.settings.retag_on_model_change == "new")  # fmt: skip
        if stale:
            log.info("re-tagging with the new champion", extra={"fields": {"complaints": len(stale)}})
            size = night.settings.batch_rows
            columns = ["complaint_id", "text_redacted", "text_sha256", "feedback_type_given"]
            reads = (
                store.read_complaints(night.engine, stale[i : i + size], columns) for i in range(0, len(stale), size)
            )
            _score_into_store(night, reads, bar)
    quarantine.close()


def _changed_rows(night: Night, sources: list, quarantine: TableWriter):
    """Per chunk of every source, the complaints that are new or whose text changed; on the
    way, quarantine bad rows and update complaints whose details alone changed."""
    reader, latest = ExportReader(night.settings), LatestSource(sources)
    for source in latest.newest_first():
        for rows, bad in reader.chunks(source):
            night.counts["rows_read"] += len(rows) + len(bad)
            if len(bad):
                night.counts["quarantined"] += len(bad)
                store.write_quarantine(night.engine, night.run_id, bad, reader.columns["complaint_id"])
                quarantine.write(bad)
            rows = latest.keep(rows)
            if rows.empty:
                continue
            rows = prepare(rows, night.today)
            changes = classify(rows, store.known_hashes(night.engine, rows["complaint_id"]))
            for kind, n in changes.counts.items():
                night.counts[kind] += n
            if len(changes.details_only):
                store.write_batch(night.engine, _with_redacted(changes.details_only), None, night.run_id,
                                  night.settings.model_name, night.model_version)  # fmt: skip
            yield changes.to_score


def _batches(frames, size: int):
    """The rows of ``frames`` again, in batches of ``size`` (the last may be smaller), redacted."""
    pending: list[pd.DataFrame] = []
    for frame in frames:
        pending.append(frame)
        while sum(len(p) for p in pending) >= size:
            merged = pd.concat(pending, ignore_index=True)
            pending = [merged.iloc[size:]]
            yield _with_redacted(merged.iloc[:size])
    rest = pd.concat(pending, ignore_index=True) if pending else pd.DataFrame()
    if len(rest):
        yield _with_redacted(rest)


def _score_into_store(night: Night, batches, bar) -> None:
    """Score batches and commit each with its taggings; one pool of scoring workers per call
    (each holds one copy of the model)."""
    for batch, tags in _scored(batches, night.model_path, night.settings):
        tags = tags.assign(complaint_id=batch["complaint_id"].to_numpy(), text_sha256=batch["text_sha256"].to_numpy())
        store.write_batch(night.engine, batch, tags, night.run_id, night.settings.model_name, night.model_version)
        night.counts["scored"] += len(batch)
        bar.update(len(batch))


def _after_tagging(night: Night, summary: NightlySummary) -> None:
    """Learning-stage statuses, the learning groups (when the reviews changed) and the outputs."""
    refreshed = store.refresh_learning_status(night.engine, night.today, due_soon_before(night.today))
    log.info("learning-stage statuses refreshed", extra={"fields": {"complaints": refreshed}})
    update_learning(night.settings, night.engine, night.run_id)
    _write_outputs(night.engine, night.settings, summary, night.today)


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
