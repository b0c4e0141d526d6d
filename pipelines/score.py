"""Batch scoring: tag a CSV or Parquet file of complaints with their substantive theme.

The file streams through in chunks (memory does not grow with it, but for 16 bytes per id
kept to catch duplicate ids); chunks are scored by this process and ``n_jobs - 1`` worker
processes, each holding one copy of the model; bad rows go to a quarantine file with their
reason, so rows in = rows out + rows quarantined.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipelines import tracking
from pipelines.config import Settings
from pipelines.schema import FEEDBACK_TYPE_INPUT, OUTPUT_COLUMNS, OUTPUT_SCHEMA
from pipelines.tables import READER_COLUMNS, ROW, InputError, RowChecks, TableWriter, iter_chunks
from pipelines.text import redact

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["_file", ROW, "_lines", "_column", "_reason"]  # then the input columns, then "_raw"


@dataclass
class ScoreSummary:
    rows_in: int
    rows_scored: int
    rows_quarantined: int
    output: Path
    quarantine: Path | None
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 when every row was scored, 3 when some were quarantined (see cli.py)."""
        return 3 if self.rows_quarantined else 0


def score_texts(model_path: str, texts: list[str], given_types: list[str] | None = None) -> pd.DataFrame:
    """The model's output columns for ``texts``; runs in a worker process.

    ``given_types``: the feedback type an export states for each text ("" where it says
    nothing); the model's ``predict`` then chooses the theme among that type's themes (a
    complaint never gets a compliment theme). One code path for every caller."""
    frame = pd.DataFrame({"text": texts})
    if given_types is not None:
        frame[FEEDBACK_TYPE_INPUT] = pd.Series(list(given_types), dtype=object).fillna("").astype(str).to_numpy()
    return tracking.load_model(model_path).predict(frame)


def model_feedback_types(model_path: str) -> dict[str, str]:
    """Theme -> feedback type, as the model at ``model_path`` was trained (empty without a taxonomy)."""
    return tracking.load_model(model_path).unwrap_python_model().info.get("feedback_types") or {}


def score_frame(frame: pd.DataFrame, model_path: str, text_column: str) -> pd.DataFrame:
    """``frame`` with the model's output columns added (in process; for small frames and tests)."""
    out = score_texts(model_path, frame[text_column].astype(str).tolist())
    return pd.concat([_keep_input_apart(frame).reset_index(drop=True), out[OUTPUT_COLUMNS]], axis=1)


def score_file(
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    text_column: str,
    id_column: str | None = None,
    quarantine_path: str | Path | None = None,
    *,
    settings: Settings,
    progress: bool = True,
    type_column: str | None = None,
    keep_text: bool = False,
) -> ScoreSummary:
    """Tag every row of ``input_path`` and write all its columns plus :data:`OUTPUT_COLUMNS`;
    the text column is written redacted unless ``keep_text`` (the quarantine keeps rows as read,
    so they can be corrected, in a file only its owner can read). ``type_column`` names the
    export's feedback type (complaint, compliment; empty = unknown): each row's theme is then one
    of that type's, and a row with another value is quarantined.

    Example: ``score_file("models:/complaint-themes@champion", "new.csv", "tagged.csv", "text", "id", settings=s)``
    """
    started = time.monotonic()
    input_path, output_path = Path(input_path), Path(output_path)
    quarantine_path = (
        Path(quarantine_path) if quarantine_path else output_path.with_name(output_path.stem + ".quarantine.csv")
    )
    required = [text_column] + ([id_column] if id_column else []) + ([type_column] if type_column else [])
    chunks = iter_chunks(input_path, settings.chunk_rows, required)
    first = next(chunks, None)  # raises InputError early for a missing or empty file or column
    model_path = tracking.resolve_model(model_uri, settings)
    types = _types_to_check(model_uri, model_path, type_column)
    checks = RowChecks(
        str(input_path), text_column, id_column, settings.max_text_chars, (type_column, types) if type_column else None
    )
    writer, quarantine = TableWriter(output_path), TableWriter(quarantine_path, private=True)
    rows_in = 0
    columns: list[str] | None = None

    def validated():
        nonlocal rows_in, columns
        for chunk in _chain(first, chunks):
            good, bad = checks.split(chunk)
            rows_in += len(chunk)
            if columns is None:
                columns = [c for c in good.columns if c != ROW]  # input names, as quarantine keeps them
            if len(bad):
                quarantine.write(bad.reindex(columns=[*QUARANTINE_COLUMNS, *columns, "_raw"]))
                log.warning(
                    "rows quarantined",
                    extra={"fields": {"file": str(input_path), "rows": len(bad)}},
                )
            if len(good):  # a header-only file, or a chunk all quarantined: nothing to score
                yield good

    bar = tqdm(unit="rows", disable=not progress, desc="scoring", mininterval=1.0)
    try:
        results = scored_in_order(validated(), model_path, text_column, max(1, settings.n_jobs), type_column)
        for good, out in results:
            writer.write(_tagged(good, out, text_column, keep_text))
            bar.update(len(good))
    finally:
        bar.close()
        kept_columns = list(_keep_input_apart(pd.DataFrame(columns=columns or required)).columns)
        writer.close(empty_columns=kept_columns + OUTPUT_COLUMNS)
        quarantine.close()
    return _summary(input_path, rows_in, writer, quarantine, time.monotonic() - started)


def _summary(input_path: Path, rows_in: int, writer: TableWriter, quarantine: TableWriter, seconds: float):
    """What a scoring run did, logged; an empty quarantine file is removed."""
    summary = ScoreSummary(
        rows_in=rows_in,
        rows_scored=writer.rows,
        rows_quarantined=quarantine.rows,
        output=writer.path,
        quarantine=quarantine.path if quarantine.rows else None,
        seconds=round(seconds, 3),
    )
    if not quarantine.rows and quarantine.path.exists():
        quarantine.path.unlink()
    if not rows_in:
        log.warning("no rows: the file has a header and nothing else", extra={"fields": {"file": str(input_path)}})
    log.info("scoring finished", extra={"fields": {k: str(v) for k, v in summary.__dict__.items()}})
    return summary


def _tagged(good: pd.DataFrame, out: pd.DataFrame, text_column: str, keep_text: bool) -> pd.DataFrame:
    """Input columns (text redacted unless ``keep_text``) and the model's output columns."""
    kept = good.drop(columns=[ROW]).reset_index(drop=True)
    if not keep_text:
        kept[text_column] = redact(kept[text_column].tolist())
    return pd.concat([_keep_input_apart(kept), out[OUTPUT_COLUMNS]], axis=1)


def scored_in_order(
    chunks: Iterator[pd.DataFrame],
    model_path: str,
    text_column: str,
    n_jobs: int,
    type_column: str | None = None,
    main_scores: bool = True,
):
    """(chunk, model output) pairs in input order, scored by ``n_jobs`` processes in all;
    ``type_column`` holds a given feedback type per row, if any (see :func:`score_texts`).

    This process scores too, between reading and writing, and ``n_jobs - 1`` workers take
    the rest: one process fewer than a pool of ``n_jobs`` workers, which saves a full copy
    of the model and its libraries in memory. At most a few chunks are in flight.
    ``main_scores=False`` (the nightly run, whose own work of reading, redacting and storing
    keeps this process busy) leaves all scoring to the ``n_jobs - 1`` workers, so the model is
    never loaded here: one copy of it fewer.
    """

    def args(chunk):
        given = chunk[type_column].fillna("").astype(str).tolist() if type_column in chunk.columns else None
        return model_path, chunk[text_column].tolist(), given

    if n_jobs == 1:
        for chunk in chunks:
            yield chunk, score_texts(*args(chunk))
        return
    workers = n_jobs - 1
    context = multiprocessing.get_context("spawn")  # no fork: MLflow and tqdm hold threads
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=tracking.load_model, initargs=(model_path,)
    ) as pool:
        pending: deque = deque()
        for chunk in chunks:
            queued = sum(isinstance(out, Future) and not out.done() for _, out in pending)
            if queued < 2 * workers or not main_scores:
                pending.append((chunk, pool.submit(score_texts, *args(chunk))))
            else:
                pending.append((chunk, score_texts(*args(chunk))))
            while pending and (len(pending) > 4 * n_jobs or _ready(pending[0][1])):
                chunk_done, out = pending.popleft()
                yield chunk_done, out.result() if isinstance(out, Future) else out
        while pending:
            chunk_done, out = pending.popleft()
            yield chunk_done, out.result() if isinstance(out, Future) else out


def _types_to_check(model_uri: str, model_path: str, type_column: str | None) -> dict[str, str]:
    """The model's theme -> feedback type map, when a type column is to be checked against it."""
    if not type_column:
        return {}
    types = model_feedback_types(model_path)
    if not types:
        raise InputError(
            f"model {model_uri!r} was trained without a taxonomy, so it knows no feedback types; "
            f"drop the feedback type column {type_column!r} or train with --taxonomy or --crosswalk"
        )
    return types


def _ready(out) -> bool:
    return not isinstance(out, Future) or out.done()


def _keep_input_apart(frame: pd.DataFrame) -> pd.DataFrame:
    """Input columns named like an output column (e.g. a human-assigned ``theme``) become
    ``<name>_input``, so the model's tags never overwrite or shadow a person's."""
    clashes = {c: f"{c}_input" for c in frame.columns if c in OUTPUT_COLUMNS}
    return frame.rename(columns=clashes) if clashes else frame


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest


# -- Spark ---------------------------------------------------------------------------------
# The same MLflow model, run by Spark through mlflow.pyfunc.spark_udf: no second implementation.
SPARK_RESULT_TYPE = ", ".join(f"{name} {kind}" for name, kind in OUTPUT_SCHEMA)


def _pyspark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ImportError("Spark scoring needs the spark extra and Java 17: pip install -e '.[spark]'") from None
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    return SparkSession, Window, F


def spark_session(master: str = "local[*]"):
    """Join the active SparkSession (a Databricks or Synapse notebook has one), or start one on
    ``master`` (any URL Spark takes: local[N], spark://, yarn, k8s://); a local driver binds to
    127.0.0.1 and runs no web UI."""
    SparkSession, _, _ = _pyspark()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.master(master).appName("learning-from-feedback").config("spark.ui.enabled", "false")
    if master.startswith("local"):
        # Local workers run this Python (with this venv's packages), not whatever "python3" is
        # on PATH; PySpark reads the variable when the session starts.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
        cores = (os.cpu_count() or 1) if inside.startswith("*") else int(inside.split(",")[0] or 1)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            # Spark's default of 200 shuffle partitions means 200 small scoring tasks on one machine.
            .config("spark.sql.shuffle.partitions", str(2 * cores))
        )
    return builder.getOrCreate()


def score_spark(df, model_uri: str, text_column: str, settings: Settings, type_column: str | None = None):
    """A Spark DataFrame with :data:`OUTPUT_COLUMNS` added, scored by the project's MLflow model
    (``models:/NAME@ALIAS`` or a model folder). Input columns named like an output column are
    renamed ``<name>_input``, as in the local scorer. Lazy: nothing is collected to the driver.

    Example (in a Databricks notebook): ``score_spark(spark.table("complaints"), "models:/complaint-themes@champion", "text", load_settings())``
    """
    _, _, F = _pyspark()
    udf = tracking.spark_udf(df.sparkSession, tracking.resolve_model(model_uri, settings), SPARK_RESULT_TYPE)
    renamed = df
    for column in df.columns:
        if column in OUTPUT_COLUMNS:
            renamed = renamed.withColumnRenamed(column, f"{column}_input")
    text = F.coalesce(F.col(text_column if text_column not in OUTPUT_COLUMNS else f"{text_column}_input"), F.lit(""))
    inputs = [text.alias("text")]
    if type_column:  # the model's optional input: what the export says the row is
        given = type_column if type_column not in OUTPUT_COLUMNS else f"{type_column}_input"
        inputs.append(F.coalesce(F.col(given), F.lit("")).alias(FEEDBACK_TYPE_INPUT))
    tagged = renamed.withColumn("_tags", udf(F.struct(*inputs)))
    return tagged.select(*renamed.columns, *[F.col(f"_tags.{c}").alias(c) for c in OUTPUT_COLUMNS])


def spark_row_checks(df, text_column: str, id_column: str | None, max_chars: int, source: str, types=None):
    """(good rows, quarantined rows) by the local engine's own rules (:class:`RowChecks`): Spark
    finds where each id first occurs (across partitions), then every batch of rows is checked
    by the same function the local engine uses."""
    _, Window, F = _pyspark()
    if ROW in df.columns:  # numbered by the project's reader (CSV staged through it)
        numbered, df = df.withColumn(ROW, F.col(ROW).cast("long")), df.drop(ROW)
    else:
        numbered = df.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1] + 1)).toDF([*df.columns, ROW])
    if id_column:
        ident = F.trim(F.coalesce(F.col(id_column), F.lit("")))
        first = F.when(ident != "", F.min(ROW).over(Window.partitionBy(ident)))
        numbered = numbered.withColumn("_first", first)
    checks = RowChecks(source, text_column, id_column, max_chars, types)

    def check(batches):
        for batch in batches:
            reason, column = checks.reasons(batch, batch["_first"] if id_column else None)
            yield batch.assign(_reason=reason.astype(object), _column=column.astype(object))

    from pyspark.sql.types import StringType, StructField, StructType

    schema = StructType([*numbered.schema.fields, StructField("_reason", StringType()), StructField("_column", StringType())])  # fmt: skip
    checked = numbered.mapInPandas(check, schema=schema)
    if id_column:
        checked = checked.drop("_first")
    good = checked.where(F.col("_reason").isNull()).drop("_reason", "_column")
    bad = checked.where(F.col("_reason").isNotNull()).withColumn("_file", F.lit(source))
    return good, bad.select("_file", ROW, "_column", "_reason", *df.columns)


def stage_csv(input_path: Path, staging: Path, required: list[str], settings: Settings) -> tuple[Path, Path | None]:
    """(Parquet of the CSV's records with their row numbers, Parquet of its malformed records or
    None), written by the project's own reader, so Spark sees CSV exactly as the local engine
    does: the same quarantine reasons, not Spark's nulls. Streams: memory stays flat."""
    rows, bad = TableWriter(staging / "rows.parquet"), TableWriter(staging / "malformed.parquet", private=True)
    for chunk in iter_chunks(input_path, settings.chunk_rows, required):
        malformed = chunk["_reason"].notna() if "_reason" in chunk.columns else pd.Series(False, index=chunk.index)
        good = chunk[~malformed].drop(columns=READER_COLUMNS, errors="ignore")
        if len(good):  # an empty chunk would fix the Parquet schema with no types
            rows.write(good.astype({ROW: "int64"}))
        columns = list(good.columns)
        if malformed.any():
            held = chunk[malformed].assign(_file=str(input_path), _column="")
            held = held.reindex(columns=["_file", ROW, "_lines", "_column", "_reason", "_raw"]).astype(str)
            bad.write(held.astype({ROW: "int64"}))
    rows.close(empty_columns=columns)
    bad.close()
    return rows.path, (bad.path if bad.rows else None)


def score_file_spark(
    model_uri: str,
    input_path: str | Path,
    output_dir: str | Path,
    text_column: str,
    id_column: str | None = None,
    quarantine_dir: str | Path | None = None,
    master: str = "local[*]",
    *,
    settings: Settings,
    type_column: str | None = None,
    keep_text: bool = False,
) -> ScoreSummary:
    """Score a Parquet or CSV file (or Parquet folder) with Spark into a folder of Parquet files,
    the text column redacted unless ``keep_text``; bad rows go to a quarantine Parquet folder with
    their reasons. A CSV is first read by the project's reader into a staging Parquet (see
    :func:`stage_csv`). Only counts reach the driver."""
    started = time.monotonic()
    input_path, output_dir = Path(input_path), Path(output_dir)
    quarantine_dir = Path(quarantine_dir) if quarantine_dir else output_dir.with_name(output_dir.name + ".quarantine")
    if not input_path.exists():
        raise InputError(f"{input_path}: file not found")
    required = [text_column] + ([id_column] if id_column else []) + ([type_column] if type_column else [])
    staging = output_dir.with_name(output_dir.name + ".staging")
    malformed = None
    if input_path.is_dir() or input_path.suffix.lower() in {".parquet", ".pq"}:
        source = input_path
    else:
        staging.mkdir(parents=True, exist_ok=True)
        source, malformed = stage_csv(input_path, staging, required, settings)
    try:
        spark = spark_session(master)
        df = spark.read.parquet(str(source))
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise InputError(f"{input_path}: column {missing[0]!r} not found; columns are: {', '.join(df.columns)}")
        df = df.select(*[df[c].cast("string").alias(c) if c != ROW else df[c] for c in df.columns])
        model_path = tracking.resolve_model(model_uri, settings)
        types = (type_column, _types_to_check(model_uri, model_path, type_column)) if type_column else None
        good, bad = spark_row_checks(df, text_column, id_column, settings.max_text_chars, str(input_path), types)
        if malformed is not None:
            bad = bad.unionByName(spark.read.parquet(str(malformed)), allowMissingColumns=True)
        scoring = SparkScoring(model_path, text_column, type_column, keep_text)
        summary = _spark_write(spark, good, bad, scoring, output_dir, quarantine_dir, settings)
    finally:
        if staging.exists():
            import shutil

            shutil.rmtree(staging)
    summary.seconds = round(time.monotonic() - started, 3)
    log.info("spark scoring finished", extra={"fields": {k: str(v) for k, v in summary.__dict__.items()}})
    return summary


@dataclass
class SparkScoring:
    """What the Spark write step scores with: the model, its inputs and whether text stays."""

    model_path: str
    text_column: str
    type_column: str | None = None
    keep_text: bool = False


def _spark_write(spark, good, bad, scoring: SparkScoring, output_dir, quarantine_dir, settings):
    _, _, F = _pyspark()
    good = good.cache()
    scored = score_spark(good.drop(ROW), scoring.model_path, scoring.text_column, settings, scoring.type_column)
    if not scoring.keep_text:
        scored = scored.withColumn(scoring.text_column, _redact_udf()(F.col(scoring.text_column)))
    scored.write.mode("overwrite").parquet(str(output_dir))
    rows_scored = spark.read.parquet(str(output_dir)).count()
    bad.write.mode("overwrite").parquet(str(quarantine_dir))
    rows_quarantined = spark.read.parquet(str(quarantine_dir)).count()
    good.unpersist()
    if rows_quarantined:
        os.chmod(quarantine_dir, 0o700)  # original text: the owner's only
    return ScoreSummary(
        rows_in=rows_scored + rows_quarantined,
        rows_scored=rows_scored,
        rows_quarantined=rows_quarantined,
        output=output_dir,
        quarantine=quarantine_dir if rows_quarantined else None,
        seconds=0.0,
    )


def _redact_udf():
    """pipelines.text.redact as a Spark pandas UDF: the same redaction as the local engine."""
    _, _, F = _pyspark()

    @F.pandas_udf("string")
    def redacted(texts: pd.Series) -> pd.Series:
        from pipelines.text import redact as redact_texts

        return pd.Series(redact_texts(texts.tolist()), index=texts.index)

    return redacted
