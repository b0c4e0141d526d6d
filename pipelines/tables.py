"""Reading and writing tables at the edges: CSV, Parquet and XLSX in, CSV and Parquet out.

Inputs are checked once, here: a problem with the whole file (missing, empty, missing a
column) raises :class:`InputError` with a one-line message naming the file and column;
a problem with a row sends that row to quarantine with its reason, and the rest carry on.
Outputs written as CSV have spreadsheet formulas neutralised.
"""

from __future__ import annotations

import codecs
import csv
import logging
import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.schema import known_types, normalise_types, unknown_types

log = logging.getLogger(__name__)

ROW = "source_row"  # 1-based data row number in the source file (header excluded)
# Set by the reader: physical lines of a record ("5" or "5-9"), why it is malformed, its raw text.
READER_COLUMNS = ["_lines", "_reason", "_raw"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class InputError(ValueError):
    """The input cannot be read at all; the message names the file (and column or row)."""


SUFFIX_FORMATS = {
    ".csv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
# What a file's first bytes say it is, for an error that names what a misnamed file looks like.
MAGIC = [
    (b"PK\x03\x04", "xlsx", "a ZIP archive (an XLSX workbook or other Office file)"),
    (b"PAR1", "parquet", "a Parquet file"),
    (b"%PDF", "pdf", "a PDF document"),
    (b"\x1f\x8b", "gzip", "a gzip archive (unzip it first)"),
    (b"\xd0\xcf\x11\xe0", "ole", "an old binary Office file (XLS or DOC: save it as XLSX or CSV)"),
    (b"7z\xbc\xaf", "7z", "a 7-Zip archive"),
]
_NOT_TEXT = re.compile(r"[\x00\ud800-\udfff]")  # NUL, or a byte the encoding could not decode
_BARE_CR = re.compile(r"\r(?!\n)")
_UNDECODED = re.compile("[\udc80-\udcff]")
_DECODED_NON_ASCII = re.compile("[\u0080-\ud7ff\ue000-\U0010ffff]")
DELIMITERS = (",", ";", "\t", "|")
# A record may span this many lines (a long quoted text); past it, an opening quote that never
# closes is reported at its line, so one stray quote cannot make the reader hold the whole file.
MAX_RECORD_LINES = 2_000
csv.field_size_limit(2**31 - 1)  # a 5 MB cell is read (and then quarantined as too long), not a parser error


def suffix_format(path: Path) -> str:
    """csv, parquet or xlsx from the file's name (for outputs, which do not exist yet)."""
    kind = SUFFIX_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unsupported file type {path.suffix.lower()!r} (use .csv, .parquet or .xlsx)")
    return kind


def file_format(path: Path) -> str:
    """csv, parquet or xlsx for an input, from its name checked against its first bytes: a CSV
    saved as .xlsx, a gzip named .csv or a PDF is named with what it looks like."""
    kind = suffix_format(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    looks, what = next(((k, w) for magic, k, w in MAGIC if head.startswith(magic)), ("csv", "text (CSV)"))
    if looks != kind:
        raise InputError(f"{path}: named {path.suffix} but the content looks like {what}")
    return kind


def detect_encoding(path: Path, block_size: int = 1 << 22) -> str:
    """The file's text encoding: UTF-16 or UTF-8 with a BOM; UTF-8 when it decodes as UTF-8, or
    when it holds real UTF-8 text and a few damaged bytes (those lines are quarantined); else
    Windows-1252, which Excel on Windows writes (read as such, with a warning naming the line).

    The check streams, so memory does not grow with the file."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    encoding = "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    line, first_bad, utf8_text = 1, None, False
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            if block.isascii():
                line += block.count(b"\n")
                continue
            text = decoder.decode(block)
            bad = _UNDECODED.search(text)
            if bad and first_bad is None:
                first_bad = line + text.count("\n", 0, bad.start())
            utf8_text = utf8_text or _DECODED_NON_ASCII.search(text) is not None
            line += text.count("\n")
    if first_bad is None or utf8_text:
        return encoding
    log.warning("input not UTF-8, reading as Windows-1252", extra={"fields": {"file": str(path), "line": first_bad}})
    return "cp1252"


def check_columns(path: Path, columns: list[str], required: list[str]) -> None:
    seen: dict[str, int] = {}
    for position, name in enumerate(map(str, columns), start=1):
        if name in seen and name:  # unnamed columns (a merged title row) fail on the missing column instead
            raise InputError(f"{path}: columns {seen[name]} and {position} are both named {name!r}; rename one")
        seen[name] = position
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{path}: column {missing[0]!r} not found; columns are: {', '.join(map(str, columns))}")


@dataclass
class CsvRecords:
    """Records of a CSV file with the physical lines (counted at line feeds) each came from.

    Every line is accounted for: header, record, blank, repeated header, or part of a
    malformed record (bad quoting, wrong field count, NUL, undecodable bytes) that is given
    back with its reason; after a malformed record that spans lines, reading resumes at its
    second line, so one stray quote costs one record, not the rest of the file."""

    path: Path
    encoding: str
    delimiter: str = ","
    header: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    repeated_headers: list[int] = field(default_factory=list)

    def _physical(self) -> Iterator[tuple[int, str]]:
        with open(self.path, encoding=self.encoding, errors="surrogateescape", newline="\n") as fh:
            for number, line in enumerate(fh, start=1):
                self.lines = number
                yield number, _BARE_CR.sub(" ", line)

    def records(self) -> Iterator[tuple[list[str] | None, int, int, str | None, str]]:
        """(fields or None, first line, last line, reason if malformed, raw text), header excluded."""
        source = self._physical()
        pushback: deque = deque()
        taken: list[tuple[int, str]] = []

        def feed():
            while True:
                item = pushback.popleft() if pushback else next(source, None)
                if item is None:
                    return
                taken.append(item)
                if len(taken) > MAX_RECORD_LINES:  # a quote that never closes: stop, do not read on
                    raise csv.Error(f"a quoted field runs on past {MAX_RECORD_LINES} lines")
                yield item[1]

        lines = feed()
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        while True:
            taken.clear()
            try:
                fields = next(reader, None)
                reason = None
            except csv.Error as err:
                why = "the file ends inside a quoted field" if "unexpected end of data" in str(err) else str(err)
                fields, reason = None, f"bad quoting ({why})"
                lines = feed()  # the old feed may have run to the end of the file
                reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
            if not taken or (fields is None and reason is None):
                return
            if reason and len(taken) > 1:  # resync: give back all but the first line
                pushback.extendleft(reversed(taken[1:]))
                del taken[1:]
            first, last = taken[0][0], taken[-1][0]
            raw = _UNDECODED.sub("\ufffd", "".join(t[1] for t in taken))
            if not self.header:
                if reason is None and fields in ([], [""]):
                    self.blank_lines += 1
                    continue
                self.header = [] if fields is None else fields
                yield fields, first, last, reason, raw
                continue
            yield self._judge(fields, first, last, reason, raw)

    def _judge(self, fields, first, last, reason, raw):
        if reason is None:
            if fields == [] or fields == [""]:
                self.blank_lines += last - first + 1
                return None, first, last, "blank", raw
            if fields == self.header:
                self.repeated_headers.append(first)
                return None, first, last, "header", raw
            if len(fields) > len(self.header) and not any(f.strip() for f in fields[len(self.header) :]):
                fields = fields[: len(self.header)]  # trailing empty cells, as Excel writes
            if len(fields) != len(self.header):
                reason = f"wrong number of fields ({len(fields)}, the header has {len(self.header)})"
            elif any(_NOT_TEXT.search(f) for f in fields):
                bad = next(f for f in fields if _NOT_TEXT.search(f))
                reason = "NUL character in the row" if "\x00" in bad else f"bytes that are not valid {self.encoding}"
        return (None if reason else fields), first, last, reason, raw


def _sniff_delimiter(path: Path, encoding: str) -> str:
    """The header line's most frequent delimiter among , ; tab | (comma on a tie)."""
    with open(path, encoding=encoding, errors="surrogateescape", newline="\n") as fh:
        for line in fh:
            if line.strip():
                counts = [line.count(d) for d in DELIMITERS]
                return DELIMITERS[counts.index(max(counts))] if max(counts) else ","
    return ","


def _csv_chunks(path: Path, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
    """CSV records in chunks of strings; malformed records as quarantine rows (``_reason``)."""
    encoding = detect_encoding(path)
    reader = CsvRecords(path, encoding, _sniff_delimiter(path, encoding))
    records = reader.records()
    header = next(records, None)
    if header is None or header[0] is None:
        why = "has no header row" if header is None else f"header line cannot be read: {header[3]}"
        raise InputError(f"{path}: file {why}")
    columns = [c.strip() for c in header[0]]
    check_columns(path, columns, required)
    good, bad, row = [], [], 0
    for fields, first, last, reason, raw in records:
        if reason in ("blank", "header"):
            if reason == "header":
                log.warning("repeated header row skipped", extra={"fields": {"file": str(path), "line": first}})
            continue
        row += 1
        lines = str(first) if first == last else f"{first}-{last}"
        if reason:
            bad.append(
                {ROW: row, "_lines": lines, "_reason": f"malformed CSV record, line {lines}: {reason}", "_raw": raw}
            )
        else:
            good.append([*fields, row, lines])
        if len(good) + len(bad) >= chunk_rows:
            yield _records_frame(columns, good, bad)
            good, bad = [], []
    if good or bad or row == 0:
        yield _records_frame(columns, good, bad)
    _log_lines(path, reader, row)


def _records_frame(columns: list[str], good: list, bad: list) -> pd.DataFrame:
    frame = pd.DataFrame(good, columns=[*columns, ROW, "_lines"], dtype=object)
    if bad:
        frame = pd.concat([frame, pd.DataFrame(bad)], ignore_index=True).sort_values(ROW, kind="stable")
        frame[columns] = frame[columns].astype(object).where(frame[columns].notna(), "")
    return frame.reset_index(drop=True)


def _log_lines(path: Path, reader: CsvRecords, records: int) -> None:
    fields = {"file": str(path), "lines": reader.lines, "records": records, "blank_lines": reader.blank_lines}
    if reader.repeated_headers:
        fields["repeated_headers_at"] = ",".join(map(str, reader.repeated_headers[:20]))
    log.info("CSV read", extra={"fields": fields})


def _xlsx_chunks(path: Path, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
    """The first sheet, as strings (other sheets are named in a warning and not read)."""
    try:
        book = pd.ExcelFile(path)
    except Exception as err:  # noqa: BLE001 - a broken workbook is the user's file, not our bug
        raise InputError(f"{path}: not a readable XLSX workbook ({type(err).__name__})") from None
    if len(book.sheet_names) > 1:
        log.warning(
            "only the first sheet is read", extra={"fields": {"file": str(path), "sheets": len(book.sheet_names)}}
        )
    raw = pd.read_excel(book, sheet_name=book.sheet_names[0], header=None, dtype=str, keep_default_na=False)
    if raw.empty:
        raise InputError(f"{path}: sheet {book.sheet_names[0]!r} is empty (no header row)")
    columns = [str(c).strip() for c in raw.iloc[0]]
    check_columns(path, columns, required)
    frame = raw.iloc[1:].set_axis(columns, axis=1)
    for begin in range(0, max(len(frame), 1), chunk_rows):
        part = frame.iloc[begin : begin + chunk_rows]
        yield part.assign(**{ROW: range(begin + 1, begin + 1 + len(part))}).reset_index(drop=True)


def _parquet_chunks(path: Path, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path)
    check_columns(path, parquet.schema_arrow.names, required)
    start = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        frame = pd.DataFrame({name: _as_strings(batch.column(name)) for name in batch.schema.names})
        yield frame.assign(**{ROW: range(start, start + len(frame))})
        start += len(frame)
    if start == 1:
        yield pd.DataFrame(columns=[*parquet.schema_arrow.names, ROW])


def _as_strings(column: pa.Array) -> list:
    """A Parquet column as text ("" for null); lists, structs and binary as their text form."""
    try:
        values = column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return ["" if v is None else str(v) for v in column.to_pylist()]
    return values.fill_null("").to_pylist()


def iter_chunks(path: str | Path, chunk_rows: int, required: list[str]) -> Iterator[pd.DataFrame]:
    """The table in chunks of strings, each with a ``source_row`` column; malformed CSV records
    are yielded as quarantine rows (``_reason`` set) instead of being skipped. A file with a
    header and no rows yields one empty chunk; a file with no header is an :class:`InputError`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty (no header, no rows)")
        kind = file_format(path)
        readers = {"csv": _csv_chunks, "parquet": _parquet_chunks, "xlsx": _xlsx_chunks}
        yield from readers[kind](path, chunk_rows, required)
    except PermissionError:
        raise InputError(f"{path}: cannot be read (permission denied)") from None
    except pa.ArrowInvalid as err:
        raise InputError(f"{path}: not a readable Parquet file ({err})") from None
    except UnicodeError as err:
        raise InputError(f"{path}: cannot decode the text ({err.__class__.__name__})") from None


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
        frame = frame[~bad]
    return frame.drop(columns=READER_COLUMNS, errors="ignore")


def parse_dates(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(dates, bad mask): ISO (YYYY-MM-DD) or UK day-first (DD/MM/YYYY); blank is not bad.
    The one date rule for every input (exports, the source table, reviews)."""
    text = values.fillna("").astype(str).str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    rest = parsed.isna() & (text != "")
    if rest.any():
        parsed[rest] = pd.to_datetime(text[rest], errors="coerce", format="%d/%m/%Y")
    return parsed.dt.date, parsed.isna() & (text != "")


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
    """Per-row validation, one definition for the local and the Spark engine. A row gets the
    first reason that applies, in this order: a reader's reason (a malformed record), empty
    text, text longer than ``max_chars``, a feedback type the taxonomy does not know (with
    ``types``: (column, theme -> type map); empty means unknown), missing id, duplicate id
    (every occurrence after the first, by row number)."""

    source: str
    text_column: str
    id_column: str | None
    max_chars: int
    types: tuple[str, dict] | None = None
    seen: SeenIds = field(default_factory=lambda: SeenIds())

    def split(self, chunk: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(good rows, quarantined rows with ``_reason``, ``_column`` and ``_file``), ids
        remembered across chunks (local engine)."""
        first = None
        if self.id_column:
            ids = self._ids(chunk)
            present = (ids != "").to_numpy()
            first = pd.Series(np.nan, index=chunk.index)
            first[present] = self.seen.first_rows(
                ids[present].to_numpy(dtype=object), chunk.loc[present, ROW].to_numpy()
            )
        reason, column = self.reasons(chunk, first)
        bad = reason.notna()
        quarantined = chunk[bad].assign(_reason=reason[bad], _column=column[bad], _file=self.source)
        return chunk[~bad].drop(columns=READER_COLUMNS, errors="ignore"), quarantined

    def reasons(self, chunk: pd.DataFrame, first_rows: pd.Series | None) -> tuple[pd.Series, pd.Series]:
        """(reason, column) per row, None where the row is good. ``first_rows``: the row number
        at which each row's id first occurs (however the engine found it; NaN for no id)."""
        reason = chunk["_reason"].astype(object) if "_reason" in chunk.columns else pd.Series(None, index=chunk.index, dtype=object)  # fmt: skip
        column = pd.Series(None, index=chunk.index, dtype=object)
        column[reason.notna()] = ""

        def flag(mask, why, where):
            """Give the rows of ``mask`` still without a reason this one; ``why`` is the text,
            or a function of those rows' positions that writes it (only for the rows flagged)."""
            mask = reason.isna() & mask
            if mask.any():
                reason[mask], column[mask] = (why(mask) if callable(why) else why), where

        text = chunk[self.text_column].fillna("").astype(str) if self.text_column in chunk.columns else pd.Series("", index=chunk.index)  # fmt: skip
        length = text.str.len()
        flag(text.str.strip() == "", "empty text", self.text_column)
        flag(length > self.max_chars, lambda m: f"text longer than {self.max_chars} characters (" + length[m].astype(str) + ")", self.text_column)  # fmt: skip
        if self.types is not None and self.types[0] in chunk.columns:
            type_column, feedback_types = self.types
            given = chunk[type_column]
            known = ", ".join(known_types(feedback_types))
            bad = pd.Series(unknown_types(normalise_types(given.tolist()), feedback_types), index=chunk.index)
            flag(bad, lambda m: [f"{type_column} {str(v)[:40]!r} is not a feedback type of the taxonomy ({known})" for v in given[m]], type_column)  # fmt: skip
        if self.id_column:
            ids = self._ids(chunk)
            flag(ids == "", "missing id", self.id_column)
            duplicate = (ids != "") & first_rows.notna() & (first_rows != pd.to_numeric(chunk[ROW]))
            flag(duplicate, lambda m: [f"duplicate id {i!r} (first at row {int(r)})" for i, r in zip(ids[m], first_rows[m])], self.id_column)  # fmt: skip
        return reason, column

    def _ids(self, chunk: pd.DataFrame) -> pd.Series:
        if self.id_column not in chunk:
            return pd.Series("", index=chunk.index)
        return chunk[self.id_column].fillna("").astype(str).str.strip()


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


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and line feed; CR included


def clean_text_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells with line breaks made plain line feeds (CR LF and a bare CR alike) and NUL and
    other control characters removed, so every reader splits a written CSV into the same records."""
    out = frame
    for col in frame.columns:
        values = frame[col]
        if values.dtype != object and not pd.api.types.is_string_dtype(values):
            continue
        try:
            dirty = values.str.contains(_CONTROL).fillna(False).astype(bool)
        except AttributeError:  # no strings in the column at all
            continue
        if dirty.any():
            if out is frame:
                out = frame.copy()
            fixed = (
                values[dirty].str.replace("\r\n", "\n").str.replace("\r", "\n").str.replace(_CONTROL, "", regex=True)
            )
            out.loc[dirty, col] = fixed
    return out


class TableWriter:
    """Appends chunks to a CSV (control characters cleaned, formulas neutralised, every value
    with a delimiter, quote or line break quoted) or Parquet file; one schema per file.

    ``private``: the file is readable by its owner only (quarantine files hold original text)."""

    def __init__(self, path: str | Path, private: bool = False):
        self.path = Path(path)
        self.kind = suffix_format(self.path)
        if self.kind == "xlsx":
            raise InputError(f"{self.path}: write CSV or Parquet (XLSX output is for reports)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.private = private
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._started = False
        self.rows = 0

    def _create(self) -> None:
        """Create (or empty) the file, owner-only from the start when private."""
        if self.private:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            os.chmod(self.path, 0o600)  # an existing file keeps its old mode through O_CREAT

    def write(self, frame: pd.DataFrame) -> None:
        if not self._started:
            self._create()
        if self.kind == "csv":
            neutralise_formulas(clean_text_cells(frame)).to_csv(
                self.path,
                mode="a" if self._started else "w",
                header=not self._started,
                index=False,
                lineterminator="\n",
                quoting=csv.QUOTE_MINIMAL,
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
