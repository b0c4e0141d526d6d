"""Serious Incident Reviews: reading them (text, Markdown, Word, PDF, or a table) and the
learning points in them.

Extraction splits a review into points by its own structure: numbered, lettered and
bulleted items, paragraphs under learning headings (Learning, Analysis, Concerns,
Recommendations, Actions), and sentences when there is no structure; boilerplate that is
not learning ("This report is being sent to...") is dropped and identifiers are redacted.
A review that cannot be read is reported by name (:class:`ReviewError`); the rest carry on.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipelines.text import as_text, normalise, person_names

log = logging.getLogger(__name__)


LEARNING_HEADINGS = (
    "learning",
    "lessons",
    "analysis",
    "concern",
    "recommendation",
    "action",
    "finding",
    "what went wrong",
    "areas for improvement",
    "improvement",
)
OTHER_HEADINGS = (
    "background",
    "circumstances",
    "introduction",
    "investigation",
    "inquest",
    "chronology",
    "summary",
    "record of inquest",
    "terms of reference",
    "methodology",
)

# List markers: (1) 1. 1) a) (a) a. i. (iv) - • * – ▪ ·
_MARKER = re.compile(
    r"^\s*(?P<marker>"
    r"\(?\d{1,2}(?:\.\d{1,2})*[.)]"  # 1.  1)  (1)  5.1.
    r"|\d{1,2}(?:\.\d{1,2})+(?=\s)"  # 5.1
    r"|\d{1,2}(?=\s+[A-Z])"  # a bare number before a capital: "1 That the..."
    r"|\(?[a-z][.)]|\([a-z]\)"  # a)  (a)  a.
    r"|\(?(?:i{1,3}|iv|v|vi{1,3}|ix|x)[.)]"  # i.  (iv)
    r"|[-\u2022*\u2013\u25aa\u00b7\u25cf]"  # - • * – ▪ · ●
    r")\s+(?=\S)",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"^(?:"
    r"this report is being sent to|you are under a duty to respond|your response must contain|"
    r"i have sent a copy|i am under a duty to send|i have also sent|i may also send|"
    r"in my opinion,? (?:there is a risk|action should be taken|urgent action)|"
    r"in the circumstances,? it is my statutory duty|it is my statutory duty|"
    r"the matters? of concern (?:is|are) as follows|the matters? giving rise to concern|"
    r"during the course of the (?:inquest|investigation),? the evidence revealed|"
    r"the evidence revealed matters giving rise to concern|"
    r"i am concerned as follows|my concerns are as follows|the concerns are as follows|"
    r"(?:please )?(?:note|dated?|signed)\b|coroner\b.{0,40}$"
    r")",
    re.IGNORECASE,
)
MIN_POINT_CHARS = 25
LONG_PARAGRAPH_CHARS = 600


@dataclass(frozen=True)
class Block:
    text: str
    marker: str
    section: str


def _is_standalone_heading(paragraph: str) -> bool:
    """A paragraph of one short line with no closing punctuation: a heading such as an
    addressee ("Whittington Hospital Trust") or a topic ("Agreement of a care plan")."""
    line = paragraph.strip()
    return (
        "\n" not in line
        and 0 < len(line.split()) <= 15
        and line[-1] not in ".?!;,:"
        and not line[0].islower()
        and not _MARKER.match(line)
    )


def _is_heading(line: str) -> str | None:
    """The heading's name if ``line`` is a heading (short, no full stop, known word), else None."""
    stripped = re.sub(r"^\s*(?:\d{1,2}[.)]?|[A-Z][.)])?\s*", "", line).strip().rstrip(":").strip()
    if not stripped or len(stripped) > 60 or stripped.endswith(".") or len(stripped.split()) > 7:
        return None
    lowered = stripped.lower()
    if any(h in lowered for h in LEARNING_HEADINGS + OTHER_HEADINGS):
        return lowered
    return None


def _is_learning_section(section: str) -> bool:
    return any(h in section for h in LEARNING_HEADINGS)


def split_blocks(text: str) -> list[Block]:
    """Paragraphs and list items, in order, each with its marker and the heading above it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[Block] = []
    section = ""
    for paragraph in re.split(r"\n\s*\n", text):
        if _is_standalone_heading(paragraph) and _is_heading(paragraph) is None:
            section = normalise(paragraph).lower()
            continue
        current: list[str] = []
        marker = ""
        for line in paragraph.split("\n"):
            if not line.strip():
                continue
            heading = _is_heading(line)
            if heading is not None and (not _MARKER.match(line) or len(heading.split()) <= 4):
                if current:
                    blocks.append(Block(" ".join(current), marker, section))
                    current, marker = [], ""
                section = heading
                continue
            match = _MARKER.match(line)
            if match:
                if current:
                    blocks.append(Block(" ".join(current), marker, section))
                current, marker = [line[match.end() :].strip()], match.group("marker")
            else:
                current.append(line.strip())
        if current:
            blocks.append(Block(" ".join(current), marker, section))
    return blocks


def extract_points(text: str) -> list[dict]:
    """Learning points of one review: ``point_text`` (not yet redacted), ``position``, ``section``, ``marker``.

    Under learning headings only, when the review has them; boilerplate and lead-ins
    ("The analysis was:") dropped; sentences when the review is one unstructured paragraph.
    """
    blocks = split_blocks(as_text(text))
    if any(_is_learning_section(b.section) for b in blocks):
        blocks = [b for b in blocks if _is_learning_section(b.section)]
    listed = any(b.marker for b in blocks)
    kept: list[Block] = []
    for i, block in enumerate(blocks):
        body = normalise(block.text)
        if len(body) < MIN_POINT_CHARS or _BOILERPLATE.match(body):
            continue
        following_is_item = i + 1 < len(blocks) and blocks[i + 1].marker
        if body.endswith(":") and following_is_item:
            continue  # a lead-in to the list that follows, not a point itself
        if listed and not block.marker:
            # In a review written as a list, an unmarked paragraph before the first item is
            # background, and one after an item (in the same section) continues that item.
            if kept and kept[-1].marker and kept[-1].section == block.section:
                kept[-1] = Block(f"{kept[-1].text} {body}", kept[-1].marker, kept[-1].section)
            continue
        kept.append(Block(body, block.marker, block.section))
    if len(kept) == 1 and not kept[0].marker and len(kept[0].text) > LONG_PARAGRAPH_CHARS:
        kept = [Block(s, "", kept[0].section) for s in _sentences(kept[0].text) if len(s) >= MIN_POINT_CHARS]
    return [
        {"point_text": b.text, "position": n, "section": b.section, "marker": b.marker}
        for n, b in enumerate(kept, start=1)
    ]


def _sentences(text: str) -> list[str]:
    from pipelines.text import make_nlp

    nlp = make_nlp(sentences=True)
    return [s.text.strip() for s in nlp(text).sents]


# -- grouping ----------------------------------------------------------------------------

# -- reading reviews ---------------------------------------------------------------------
DOCUMENT_SUFFIXES = {".txt", ".md", ".docx", ".pdf"}
MAX_REVIEW_CHARS = 500_000


class ReviewError(ValueError):
    """One review cannot be read; the message names the file. Other reviews carry on."""


def _docx_text(path: Path) -> tuple[str, dict]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as err:
        raise ReviewError(f"{path}: not a readable .docx file ({type(err).__name__})") from None
    lines = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            lines.append("")
            continue
        # Word keeps list numbering and bullets out of the text; put a marker back so the
        # item is split like any other list.
        numbered = paragraph._p.pPr is not None and paragraph._p.pPr.numPr is not None
        style = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        lines.append(f"- {text}" if numbered or style.startswith("list") else text)
        if not (numbered or style.startswith("list")):
            lines.append("")
    props = document.core_properties
    meta = {
        "date": props.created.date().isoformat() if props.created else "",
        "team": props.category or props.subject or "",
    }
    return "\n".join(lines), meta


def _pdf_text(path: Path) -> tuple[str, dict]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except (PdfReadError, OSError, ValueError) as err:
        raise ReviewError(f"{path}: not a readable PDF ({type(err).__name__})") from None
    if not text.strip():
        raise ReviewError(f"{path}: the PDF has no text layer (a scan?); run it through OCR or supply the text")
    info = reader.metadata or {}
    created = getattr(info, "creation_date", None)
    return text, {"date": created.date().isoformat() if created else "", "team": str(info.get("/Subject", "") or "")}


def read_review_document(path: Path) -> dict:
    """One review document as ``{"report_id", "text", "date", "team"}`` (metadata from file properties)."""
    suffix = path.suffix.lower()
    if suffix == ".docx":
        text, meta = _docx_text(path)
    elif suffix == ".pdf":
        text, meta = _pdf_text(path)
    else:
        from pipelines.tables import detect_encoding

        text, meta = path.read_text(encoding=detect_encoding(path), errors="replace"), {"date": "", "team": ""}
    if not text.strip():
        raise ReviewError(f"{path}: the document is empty")
    if len(text) > MAX_REVIEW_CHARS:
        raise ReviewError(
            f"{path}: {len(text):,} characters of text, more than a review has ({MAX_REVIEW_CHARS:,}); is it the right file?"
        )
    return {"report_id": path.stem, "text": text, **meta}


def read_reviews(
    source: Path,
    id_column: str = "id",
    text_column: str = "concerns",
    date_column: str = "date",
    team_column: str = "team",
    name_column: str | None = None,
    metadata: Path | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Reviews as a frame (report_id, text, date, team, names) and the problems met, one per bad file or row."""
    from pipelines.tables import read_table

    problems: list[dict] = []
    if source.is_dir():
        rows = []
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in DOCUMENT_SUFFIXES):
            try:
                rows.append(read_review_document(path))
            except ReviewError as err:
                problems.append({"source": str(path), "reason": str(err)})
        frame = pd.DataFrame(rows, columns=["report_id", "text", "date", "team"])
        sidecar = metadata or next((p for p in (source / "reviews.csv", source / "metadata.csv") if p.exists()), None)
        if sidecar is not None:
            meta = read_table(sidecar, [id_column])
            meta = meta.rename(columns={id_column: "report_id", date_column: "date_meta", team_column: "team_meta"})
            meta["report_id"] = meta["report_id"].map(lambda v: Path(v).stem)
            frame = frame.merge(meta, on="report_id", how="left")
            for col in ("date", "team"):
                if f"{col}_meta" in frame:
                    frame[col] = (
                        frame[f"{col}_meta"].fillna("").where(frame[f"{col}_meta"].fillna("") != "", frame[col])
                    )
        frame["names"] = [[] for _ in range(len(frame))]
        if name_column and sidecar is not None and name_column in meta.columns:
            frame["names"] = frame[name_column].map(person_names)
    else:
        table = read_table(source, [id_column, text_column])
        frame = pd.DataFrame(
            {
                "report_id": table[id_column],
                "text": table[text_column],
                "date": table[date_column] if date_column in table else "",
                "team": table[team_column] if team_column in table else "",
                "names": table[name_column].map(person_names)
                if name_column and name_column in table
                else [[]] * len(table),
            }
        )
    frame["date"] = _iso_dates(frame, problems)
    return frame.reset_index(drop=True), problems


def _iso_dates(frame: pd.DataFrame, problems: list[dict]) -> pd.Series:
    """Review dates as YYYY-MM-DD text by the one date rule (:func:`pipelines.tables.parse_dates`);
    a date that is not one is blanked, the review kept, and the problem noted."""
    from pipelines.tables import parse_dates

    dates, bad = parse_dates(frame["date"])
    for report_id, value in zip(frame.loc[bad, "report_id"], frame.loc[bad, "date"]):
        problems.append(
            {
                "source": str(report_id),
                "reason": f"{report_id}: date '{value}' is not a date (expected YYYY-MM-DD or DD/MM/YYYY); the review is used without it",
            }
        )
    return pd.Series([d.isoformat() if pd.notna(d) else "" for d in dates], index=frame.index, dtype=object)


def extract_review_points(reviews: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """One row per learning point (redacted), with its review's id, date and team; and the
    reviews that gave none."""
    from pipelines.text import redact, redact_names

    rows, problems = [], []
    for review in reviews.itertuples(index=False):
        points = extract_points(review.text)
        if not points:
            problems.append(
                {
                    "source": str(review.report_id),
                    "reason": f"{review.report_id}: no learning points found (no list items, learning section or sentences)",
                }
            )
        for p in points:
            rows.append(
                {
                    "report_id": str(review.report_id),
                    "date": review.date,
                    "team": review.team,
                    "names": review.names,
                    **p,
                }
            )
    frame = pd.DataFrame(
        rows, columns=["report_id", "date", "team", "names", "point_text", "position", "section", "marker"]
    )
    # Names of the review's subject first (they are often bare first names), then identifiers.
    named = redact_names(frame["point_text"].tolist(), frame["names"].tolist())
    frame["point_text"] = redact(named)
    return frame.drop(columns=["names"]), problems
