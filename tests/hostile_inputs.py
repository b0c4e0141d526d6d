"""A corpus of malformed and hostile complaint exports, each with its expected outcome.

Generated, not hand-edited: ``python tests/hostile_inputs.py FOLDER`` writes every file and
``FOLDER/expected.json``; ``tests/test_hostile_inputs.py`` runs each through ``cli.py score``
and the nightly reader. Every file has (or lacks, on purpose) the columns complaint_id, text
and received_date; all dates are valid, so both readers should agree on every count.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

HEADER = "complaint_id,text,received_date"
DATE = "2026-01-05"


@dataclass
class Case:
    name: str
    file: str
    rows_in: int = 0
    scored: int = 0
    quarantined: int = 0
    error: str | None = None  # fragment of the one-line error (exit 2) when the file cannot be read
    reasons: list[str] = field(default_factory=list)  # fragments of quarantine reasons
    output_ids: list[str] | None = None  # ids exactly as they must come out
    stderr: list[str] = field(default_factory=list)  # fragments the CLI must say
    absent: list[str] = field(default_factory=list)  # text that must not reach the output


def rows(n: int, start: int = 1) -> list[str]:
    return [f"C{i:05d},Visit {i} was late and nobody rang,{DATE}" for i in range(start, start + n)]


def csv_text(*lines: str, ending: str = "\n") -> str:
    return ending.join([HEADER, *lines]) + ending


def frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "complaint_id": [f"C{i:05d}" for i in range(1, n + 1)],
            "text": [f"Visit {i} was late and nobody rang" for i in range(1, n + 1)],
            "received_date": [DATE] * n,
        }
    )


def _xlsx(path: Path, sheets: dict[str, pd.DataFrame], edit=None) -> None:
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, table in sheets.items():
            table.to_excel(writer, sheet_name=name, index=False)
        if edit:
            edit(writer.book)


def _merged_header(book) -> None:
    sheet = book.worksheets[0]
    sheet.insert_rows(1)
    sheet["A1"] = "Complaint details"
    sheet.merge_cells("A1:C1")


def _formulas(book) -> None:
    sheet = book.worksheets[0]
    sheet["B3"] = '=CONCATENATE("Visit ", "late")'  # a formula with no cached value
    sheet["B4"] = "=1+1"


def text_cases(folder: Path) -> list[Case]:
    """CSV files: quoting, field counts, control characters, headers, line endings."""
    b = rows(3)
    specs = [
        (Case("clean", "clean.csv", 3, 3, 0), csv_text(*b)),
        (
            Case("stray quote opens a field mid-file", "stray_quote.csv", 5, 4, 1, reasons=["line 3: bad quoting"]),
            csv_text(b[0], f'C00009,"He said wait and never came,{DATE}', *rows(3, 2)),
        ),
        (
            Case("quote in the middle of a field is text", "mid_quote.csv", 3, 3, 0),
            csv_text(b[0], f'C00002,He said "wait" and left,{DATE}', b[2]),
        ),
        (
            Case(
                "unterminated quote on the last row", "unterminated_last.csv", 3, 2, 1, reasons=["line 4: bad quoting"]
            ),
            csv_text(*b[:2], f'C00003,"never closes,{DATE}'),
        ),
        (
            Case("quote closed then more text", "quote_then_text.csv", 3, 2, 1, reasons=["expected after"]),
            csv_text(b[0], f'C00002,"late" visit,{DATE}', b[2]),
        ),
        (
            Case("too many fields", "too_many.csv", 3, 2, 1, reasons=["wrong number of fields (5, the header has 3)"]),
            csv_text(b[0], f"C00002,late, very late,{DATE},x", b[2]),
        ),
        (
            Case("too few fields", "too_few.csv", 3, 2, 1, reasons=["wrong number of fields (2"]),
            csv_text(b[0], "C00002,late", b[2]),
        ),
        (
            Case("trailing empty cells as Excel writes", "trailing_commas.csv", 3, 3, 0),
            csv_text(*(line + ",," for line in b)),
        ),
        (
            Case("NUL byte in a row", "nul.csv", 3, 2, 1, reasons=["NUL character"]),
            csv_text(b[0], f"C00002,late\x00visit,{DATE}", b[2]),
        ),
        (
            Case(
                "bare carriage return in unquoted text",
                "bare_cr.csv",
                3,
                3,
                0,
                output_ids=["C00001", "C00002", "C00003"],
            ),
            csv_text(b[0], f"C00002,late\rvisit,{DATE}", b[2]),
        ),
        (
            Case("bare carriage return in quoted text", "bare_cr_quoted.csv", 3, 3, 0),
            csv_text(b[0], f'C00002,"late\rvisit",{DATE}', b[2]),
        ),
        (Case("Windows line endings", "crlf.csv", 3, 3, 0), csv_text(*b, ending="\r\n")),
        (
            Case("quoted field over two lines", "multiline.csv", 3, 3, 0),
            csv_text(b[0], f'C00002,"line one\nline two",{DATE}', b[2]),
        ),
        (
            Case(
                "header repeated (two exports concatenated)", "repeated_header.csv", 5, 5, 0, stderr=["repeated header"]
            ),
            csv_text(*b, HEADER, *rows(2, 4)),
        ),
        (Case("blank lines between rows", "blank_lines.csv", 3, 3, 0), csv_text(b[0], "", b[1], "", "", b[2])),
        (
            Case("two columns named text", "duplicate_header.csv", error="columns 2 and 4 are both named 'text'"),
            "complaint_id,text,received_date,text\n" + "\n".join(line + ",other" for line in b) + "\n",
        ),
        (Case("only line breaks", "only_newlines.csv", error="no header row"), "\n\n\n"),
        (Case("header only", "header_only.csv", 0, 0, 0, stderr=["no rows"]), HEADER + "\n"),
        (Case("header only, no line break", "header_only_no_newline.csv", 0, 0, 0, stderr=["no rows"]), HEADER),
        (
            Case("column names padded with spaces", "padded_header.csv", 3, 3, 0),
            " complaint_id , text ,received_date\n" + "\n".join(b) + "\n",
        ),
        (
            Case("semicolon-delimited", "semicolon.csv", 3, 3, 0),
            "\n".join(line.replace(",", ";") for line in [HEADER, *b]) + "\n",
        ),
        (Case("tab-delimited", "tab.csv", 3, 3, 0), "\n".join(line.replace(",", "\t") for line in [HEADER, *b]) + "\n"),
        (
            Case("ids kept as text", "ids.csv", 3, 3, 0, output_ids=["00123", "1e5", "0012"]),
            csv_text(f"00123,late,{DATE}", f"1e5,later,{DATE}", f"0012,latest,{DATE}"),
        ),
        (
            Case("formula in the text", "formula.csv", 2, 2, 0),
            csv_text(f'C00001,"=HYPERLINK(""http://x"",""y"")",{DATE}', f"C00002,+44 is not a formula but text,{DATE}"),
        ),
        (
            Case("duplicate id", "duplicate_id.csv", 3, 2, 1, reasons=["duplicate id 'C00001' (first at row 1)"]),
            csv_text(b[0], b[1], b[0]),
        ),
        (
            Case("empty text", "empty_text.csv", 3, 2, 1, reasons=["empty text"]),
            csv_text(b[0], f"C00002,,{DATE}", b[2]),
        ),
        (
            Case("street address redacted", "address.csv", 2, 2, 0, absent=["Acacia", "Mill Lane"]),
            csv_text(
                f"C00001,Carer did not come to 12 Acacia Avenue,{DATE}", f"C00002,Nobody at 4b Mill Lane rang,{DATE}"
            ),
        ),
        (Case("file name with spaces and accents", "réclamations du mois été.csv", 3, 3, 0), csv_text(*b)),
    ]
    for case, text in specs:
        (folder / case.file).write_text(text, encoding="utf-8", newline="")
    cases = [case for case, _ in specs]
    big = [f"C{i:05d},{'Still waiting for a call back. ' * 2}row {i},{DATE}" for i in range(1, 50_001)]
    big[24_999] = f"C25000,broken, row, with too many,{DATE}"
    (folder / "rows_50k_one_bad.csv").write_text(csv_text(*big))
    cases.append(Case("50,000 rows, one bad", "rows_50k_one_bad.csv", 50_000, 49_999, 1, reasons=["line 25001"]))
    (folder / "huge_cell.csv").write_text(csv_text(b[0], f'C00002,"{"x" * 5_000_000}",{DATE}', b[2]))
    cases.append(Case("5 MB cell", "huge_cell.csv", 3, 2, 1, reasons=["text longer than"]))
    return cases


def encoding_cases(folder: Path) -> list[Case]:
    """The same export in the encodings Excel and case systems write, plus a damaged UTF-8 file."""
    lines = [
        HEADER,
        f"C00001,The carer\u2019s visit was cancelled \u2013 again,{DATE}",
        f"C00002,caf\u00e9 closed,{DATE}",
    ]
    text = "\n".join(lines) + "\n"
    (folder / "utf8_bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (folder / "utf16le_tab.csv").write_bytes(text.replace(",", "\t").encode("utf-16"))  # Excel "Unicode text"
    (folder / "utf16be.csv").write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    (folder / "cp1252.csv").write_bytes(text.encode("cp1252"))
    latin = [
        HEADER,
        f"C00001,caf\u00e9 closed,{DATE}",
        f"C00002,\u00a35 charge \u00bd hour late,{DATE}",
        f"C00003,na\u00efve plan,{DATE}",
    ]
    (folder / "latin1.csv").write_bytes(("\n".join(latin) + "\n").encode("latin-1"))
    damaged = text.encode("utf-8") + f"C00003,bad byte \xff here,{DATE}\n".encode("latin-1")
    (folder / "utf8_one_bad_byte.csv").write_bytes(damaged)
    return [
        Case("UTF-8 with BOM", "utf8_bom.csv", 2, 2, 0),
        Case("UTF-16 LE with BOM, tab-delimited", "utf16le_tab.csv", 2, 2, 0),
        Case("UTF-16 BE with BOM", "utf16be.csv", 2, 2, 0),
        Case("Windows-1252", "cp1252.csv", 2, 2, 0, stderr=["Windows-1252"]),
        Case("Latin-1", "latin1.csv", 3, 3, 0),
        Case("UTF-8 with one undecodable byte", "utf8_one_bad_byte.csv", 3, 2, 1, reasons=["not valid utf-8"]),
    ]


def binary_cases(folder: Path) -> list[Case]:
    """Files whose content is not what their name says, Excel workbooks, Parquet, bad paths."""
    text = csv_text(*rows(3))
    (folder / "csv_named.xlsx").write_text(text)
    (folder / "gzip_named.csv").write_bytes(gzip.compress(text.encode()))
    (folder / "pdf_named.csv").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    (folder / "docx_named.csv").write_bytes(buffer.getvalue())
    pq.write_table(pa.Table.from_pandas(frame()), folder / "parquet_named.csv")
    (folder / "notes.docx").write_bytes(buffer.getvalue())
    (folder / "folder.csv").mkdir(exist_ok=True)
    _xlsx(folder / "two_sheets.xlsx", {"complaints": frame(4), "notes": pd.DataFrame({"x": [1, 2]})})
    _xlsx(folder / "merged_header.xlsx", {"complaints": frame(2)}, _merged_header)
    _xlsx(folder / "formulas.xlsx", {"complaints": frame(3)}, _formulas)
    dup = frame(2)
    dup.columns = ["complaint_id", "text", "text"]
    _xlsx(folder / "duplicate_header.xlsx", {"complaints": dup})
    _xlsx(folder / "header_only.xlsx", {"complaints": frame(0)})
    typed = pa.table(
        {
            "complaint_id": pa.array([101, 102, 103], pa.int64()),
            "text": ["late visit", "no call back", "lost form"],
            "received_date": pa.array(pd.to_datetime([DATE] * 3)),
            "score": pa.array([1.5, None, 3.0]),
            "urgent": pa.array([True, False, None]),
            "tags": pa.array([["a", "b"], [], None]),
        }
    )
    pq.write_table(typed, folder / "typed.parquet")
    pq.write_table(pa.Table.from_pandas(frame(0)), folder / "empty.parquet")
    pq.write_table(pa.Table.from_pandas(frame().drop(columns=["text"])), folder / "no_text.parquet")
    return [
        Case(
            "CSV saved with an .xlsx name", "csv_named.xlsx", error="named .xlsx but the content looks like text (CSV)"
        ),
        Case("gzip named .csv", "gzip_named.csv", error="looks like a gzip archive"),
        Case("PDF named .csv", "pdf_named.csv", error="looks like a PDF document"),
        Case("Word file named .csv", "docx_named.csv", error="looks like a ZIP archive"),
        Case("Parquet named .csv", "parquet_named.csv", error="looks like a Parquet file"),
        Case("unsupported type", "notes.docx", error="unsupported file type '.docx'"),
        Case("a folder, not a file", "folder.csv", error="is a folder, not a file"),
        Case("missing file", "no_such_export.csv", error="file not found"),
        Case("XLSX with two sheets: the first is read", "two_sheets.xlsx", 4, 4, 0, stderr=["only the first sheet"]),
        Case(
            "XLSX with a merged title row over the header",
            "merged_header.xlsx",
            error="not found; columns are: Complaint details",
        ),
        Case("XLSX formulas without cached values", "formulas.xlsx", 3, 1, 2, reasons=["empty text"]),
        Case(
            "XLSX with two columns named text", "duplicate_header.xlsx", error="columns 2 and 3 are both named 'text'"
        ),
        Case("XLSX header only", "header_only.xlsx", 0, 0, 0, stderr=["no rows"]),
        Case("Parquet with non-text columns", "typed.parquet", 3, 3, 0, output_ids=["101", "102", "103"]),
        Case("Parquet with no rows", "empty.parquet", 0, 0, 0, stderr=["no rows"]),
        Case("Parquet without the text column", "no_text.parquet", error="column 'text' not found"),
    ]


def build(folder: Path) -> list[Case]:
    """Write the corpus into ``folder`` (with ``expected.json``) and return its cases."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = text_cases(folder) + encoding_cases(folder) + binary_cases(folder)
    (folder / "expected.json").write_text(json.dumps([asdict(c) for c in cases], indent=1, ensure_ascii=False))
    return cases


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hostile_inputs.py FOLDER")
    print(f"{len(build(Path(sys.argv[1])))} cases written to {sys.argv[1]}")
