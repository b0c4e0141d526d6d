"""Reading and writing tables at the edges: CSV, Parquet and XLSX in, CSV and Parquet out.

Inputs are checked once, here: a problem with the whole file (missing, empty, missing a
column) raises :class:`InputError` with a one-line message naming the file and column;
a problem with a row sends that row to quarantine with its reason, and the rest carry on.
Outputs written as CSV have spreadsheet formulas neutralised.
"""

from __future__ import annotations

import codecs
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

_EOF_IN_STRING = re.compile(r"EOF inside string starting at row (\d+)")
_BAD_LINE = re.compile(r"Skipping line (\d+): (.*)")
ROW = "source_row"  # 1-based data row number in the source file (header excluded)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class InputError(ValueError):
    """The input cannot be read at all; the message names the file (and column or row)."""


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".txt"}:
        return "csv"
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix in {".xlsx", ".xlsm"}:
        return "xlsx"
    raise InputError(f"{path}: unsupported file type {suffix!r} (use .csv, .parquet or .xlsx)")


def detect_encoding(path: Path, block_size: int = 1 << 22) -> str:
    """'utf-8' (or 'utf-8-sig' with a BOM) when the whole file decodes as UTF-8, else 'cp1252'.

    Excel on Windows saves CSV as Windows-1252; that is read as such, with a warning naming
    the line where UTF-8 first failed. The check streams, so memory does not grow with the file.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as fh:
        head = fh.read(3)
        encoding = "utf-8-sig" if head == codecs.BOM_UTF8 else "utf-8"
        fh.seek(0)
        for block in iter(lambda: fh.read(block_size), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                bad_line = line + block[: err.start].count(b"\n")
                log.warning(
                    "input not UTF-8, reading as Windows-1252",
                    extra={"fields": {"file": str(path), "line": bad_line}},
                )
                return "cp1252"
            line += block.count(b"\n")
    return encoding


def check_columns(path: Path, columns: list[str], required: list[str]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{path}: column {missing[0]!r} not found; columns are: {', '.join(map(str, columns))}")


def iter_chunks(path: str | Path, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
    """The table in chunks of strings, each with a ``source_row`` column; bad CSV lines are yielded
    as quarantine rows (``_reason`` set) instead of being skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    kind = file_format(path)
    start = 1
    if kind == "parquet":
        parquet = pq.ParquetFile(path)
        check_columns(path, parquet.schema_arrow.names, required)
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas().astype("string").astype(object).where(lambda f: f.notna(), "")
            yield frame.assign(**{ROW: range(start, start + len(frame))})
            start += len(frame)
        return
    if kind == "xlsx":
        frame = pd.read_excel(path, dtype=str, keep_default_na=False)
        check_columns(path, list(frame.columns), required)
        for begin in range(0, len(frame), chunk_rows):
            part = frame.iloc[begin : begin + chunk_rows].copy()
            yield part.assign(**{ROW: range(begin + 1, begin + 1 + len(part))})
        return
    encoding = detect_encoding(path)
    try:
        reader = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            chunksize=chunk_rows,
            encoding=encoding,
            on_bad_lines="warn",
        )
        while True:
            # The C parser reports a line with too many fields as a warning and skips it;
            # catch those warnings and turn each into a quarantine row with its line number.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                try:
                    chunk = next(reader, None)
                except pd.errors.ParserError as err:
                    truncated = _EOF_IN_STRING.search(str(err))
                    if not truncated:
                        raise
                    yield from _rows_before_truncation(path, encoding, start, int(truncated.group(1)), required)
                    return
            if chunk is None:
                break
            if start == 1:
                check_columns(path, list(chunk.columns), required)
            chunk = chunk.assign(**{ROW: range(start, start + len(chunk))})
            start += len(chunk)
            bad = [m.group(1, 2) for w in caught for m in _BAD_LINE.finditer(str(w.message))]
            if bad:
                rows = pd.DataFrame({"_reason": [f"malformed CSV line {line}: {why}" for line, why in bad]})
                chunk = pd.concat([chunk, rows.assign(**{ROW: pd.NA})], ignore_index=True)
            yield chunk
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: file has no header row") from None
    except pd.errors.ParserError as err:
        raise InputError(f"{path}: cannot parse CSV: {err}") from None


@dataclass(frozen=True)
class SqlTable:
    """A complaint table in a database (any SQLAlchemy URL), read in chunks like an export,
    ordered by ``order_by`` so row numbers in quarantine reasons are stable."""

    url: str
    table: str
    order_by: str

    @property
    def name(self) -> str:
        from sqlalchemy import make_url

        return f"{make_url(self.url).render_as_string(hide_password=True)}#{self.table}"

    def iter_chunks(self, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
        from sqlalchemy import MetaData, Table, create_engine, select
        from sqlalchemy.exc import NoSuchTableError, SQLAlchemyError

        engine = create_engine(self.url)
        try:
            try:
                table = Table(self.table, MetaData(), autoload_with=engine)
            except NoSuchTableError:
                raise InputError(f"{self.name}: table not found") from None
            except SQLAlchemyError as err:
                raise InputError(f"{self.name}: cannot connect: {type(err).__name__}") from None
            check_columns(self.name, list(table.columns.keys()), [*required, self.order_by])
            start = 1
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True).execute(
                    select(table).order_by(table.c[self.order_by])
                )
                columns = list(result.keys())
                while rows := result.fetchmany(chunk_rows):
                    frame = pd.DataFrame(rows, columns=columns)
                    frame = frame.astype("string").astype(object).where(lambda f: f.notna(), "")
                    yield frame.assign(**{ROW: range(start, start + len(frame))})
                    start += len(frame)
        finally:
            engine.dispose()


def _rows_before_truncation(path: Path, encoding: str, start: int, broken_row: int, required: list[str]):
    """For a file cut off inside a quoted field: the rows before the cut that were not yet
    yielded, then one quarantine row saying where the file breaks."""
    remaining = broken_row - start  # data rows between those already read and the broken one
    if remaining > 0:
        rest = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding=encoding, skiprows=range(1, start), nrows=remaining
        )
        if start == 1:
            check_columns(path, list(rest.columns), required)
        yield rest.assign(**{ROW: range(start, start + len(rest))})
    reason = f"truncated file: the quoted field of data row {broken_row} never closes; nothing from there on was read"
    yield pd.DataFrame({"_reason": [reason]}).assign(**{ROW: broken_row})


def read_table(path: str | Path, required: list[str]) -> pd.DataFrame:
    """Whole table as strings (for training data, which fits in memory)."""
    chunks = list(iter_chunks(path, 1_000_000, required))
    frame = pd.concat(chunks, ignore_index=True)
    if "_reason" in frame.columns:
        bad = frame["_reason"].notna()
        if bad.any():
            log.warning(
                "malformed rows skipped",
                extra={"fields": {"file": str(path), "rows": int(bad.sum())}},
            )
        frame = frame[~bad].drop(columns=["_reason"], errors="ignore")
    return frame


class SeenIds:
    """Ids seen so far and the row each was first seen at, as sorted 64-bit hashes.

    Eight bytes per id instead of a Python dict entry (about 100), so a million-row file
    is checked for duplicates in a few megabytes; a hash collision between two different
    ids (odds about 1 in 10^7 at a million ids) would show as a false duplicate, never a miss.
    """

    def __init__(self):
        self.hashes = np.empty(0, dtype=np.uint64)
        self.rows = np.empty(0, dtype=np.int64)

    def first_rows(self, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """For each id, the row it was first seen at (its own row if new); remembers new ids."""
        hashes = pd.util.hash_array(ids.astype(object))
        first = np.asarray(rows, dtype=np.int64).copy()
        where = np.searchsorted(self.hashes, hashes)
        known = where < len(self.hashes)
        known[known] = self.hashes[where[known]] == hashes[known]
        first[known] = self.rows[where[known]]
        # Within the chunk, later repeats point at the first occurrence.
        frame = pd.DataFrame({"h": hashes, "first": first})
        first = frame.groupby("h", sort=False)["first"].transform("first").to_numpy()
        new = ~known & ~pd.Series(hashes).duplicated().to_numpy()
        self.hashes = np.concatenate([self.hashes, hashes[new]])
        self.rows = np.concatenate([self.rows, first[new]])
        order = np.argsort(self.hashes, kind="stable")
        self.hashes, self.rows = self.hashes[order], self.rows[order]
        return first


@dataclass
class RowChecks:
    """Per-row validation for scoring: empty or oversized text, missing or duplicate id."""

    source: str
    text_column: str
    id_column: str | None
    max_chars: int
    seen: SeenIds = field(default_factory=lambda: SeenIds())

    def split(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(good rows, quarantined rows with ``_reason`` and ``_column``)."""
        reason = (
            chunk["_reason"].astype(object)
            if "_reason" in chunk.columns
            else pd.Series(None, index=chunk.index, dtype=object)
        )
        column = pd.Series(None, index=chunk.index, dtype=object)
        column[reason.notna()] = ""
        text = (
            chunk[self.text_column].fillna("").astype(str)
            if self.text_column in chunk.columns
            else pd.Series("", index=chunk.index)
        )
        length = text.str.len()
        empty = reason.isna() & (text.str.strip() == "")
        reason[empty], column[empty] = "empty text", self.text_column
        huge = reason.isna() & (length > self.max_chars)
        reason[huge] = "text longer than " + str(self.max_chars) + " characters (" + length[huge].astype(str) + ")"
        column[huge] = self.text_column
        if self.id_column:
            ids = (
                chunk[self.id_column].fillna("").astype(str).str.strip()
                if self.id_column in chunk
                else pd.Series("", index=chunk.index)
            )
            missing = reason.isna() & (ids == "")
            reason[missing], column[missing] = "missing id", self.id_column
            # Every occurrence of an id counts, even in a row quarantined for another reason:
            # two rows with one id are ambiguous, so neither later one is scored silently.
            present = (ids != "").to_numpy()
            first = self.seen.first_rows(ids[present].to_numpy(dtype=object), chunk.loc[present, ROW].to_numpy())
            dup_index = chunk.index[present][first != chunk.loc[present, ROW].to_numpy()]
            dup_index = dup_index[reason[dup_index].isna().to_numpy()]
            first_of = pd.Series(first, index=chunk.index[present])
            reason[dup_index] = [f"duplicate id {ids[i]!r} (first at row {first_of[i]})" for i in dup_index]
            column[dup_index] = self.id_column
        bad = reason.notna()
        quarantined = chunk[bad].assign(_reason=reason[bad], _column=column[bad], _file=self.source)
        good = chunk[~bad].drop(columns=["_reason"], errors="ignore")
        return good, quarantined


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote (numbers are left alone)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype != object and not pd.api.types.is_string_dtype(out[col]):
            continue
        values = out[col].astype(object)
        try:  # vectorised; cells that are not strings give NaN, i.e. not risky
            starts = values.str.startswith(FORMULA_START).fillna(False).astype(bool)
        except AttributeError:  # no strings in the column at all
            continue
        if not starts.any():
            continue
        candidates = values[starts]
        risky = candidates.index[pd.to_numeric(candidates, errors="coerce").isna()]  # "-5" is a number
        out.loc[risky, col] = "'" + candidates[risky].astype(str)
    return out


class TableWriter:
    """Appends chunks to a CSV (formulas neutralised) or Parquet file; one schema per file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.kind = file_format(self.path)
        if self.kind == "xlsx":
            raise InputError(f"{self.path}: write CSV or Parquet (XLSX output is for reports)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._started = False
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv":
            neutralise_formulas(frame).to_csv(
                self.path,
                mode="a" if self._started else "w",
                header=not self._started,
                index=False,
            )
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema)
            if self._parquet is None:
                self._schema = table.schema
                self._parquet = pq.ParquetWriter(self.path, self._schema)
            self._parquet.write_table(table)
        self._started = True
        self.rows += len(frame)

    def close(self, empty_columns: list[str] | None = None) -> None:
        if not self._started and empty_columns is not None:
            self.write(pd.DataFrame(columns=empty_columns))
        if self._parquet is not None:
            self._parquet.close()
