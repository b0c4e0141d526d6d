"""The corrections loop: analysts check the model's tags in a spreadsheet and their themes come
back into the store (and from there into training).

The review file lists the tags the model was unsure of, least confident first, then a random
sample of confident ones for audit; the text is redacted and every cell is a value, never a
formula. On import, each row's theme is checked against the taxonomy; a bad row is quarantined
with its file, row, column and reason and the rest are stored, with who, when and which file.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import store
from pipelines.config import Settings
from pipelines.tables import FORMULA_START, InputError, TableWriter, neutralise_formulas
from pipelines.taxonomy import Taxonomy
from pipelines.text import redact

log = logging.getLogger(__name__)

REVIEW_COLUMNS = [
    "complaint_id",
    "received_date",
    "service",
    "text",
    "model_theme",
    "confidence",
    "evidence",
    "why_listed",
    "analyst_theme",
    "analyst_note",
]
SHEET = "review"
ORDER_NOTE = [
    "The rows marked 'model unsure' are in the order that teaches the model most when labelled:",
    "the least confident first, taking the model's themes and the services in turn,",
    "with texts that nearly repeat one listed earlier moved to the end.",
    "Label from the top: the first rows you label improve the next model most.",
    "Then come confident tags drawn at random, to check the model where it is sure.",
]


def teaching_order(
    texts: list[str],
    confidence: np.ndarray,
    themes: np.ndarray,
    services: np.ndarray,
    max_similarity: float = 0.8,
    check_first: int = 2000,
) -> np.ndarray:
    """Row order in which labelling teaches the model most: least confident first, spread across
    the model's themes and the services (each theme's queue takes services in turn, and the
    themes take turns), with near-duplicates (word TF-IDF cosine above ``max_similarity`` to a
    text already listed, checked among the first ``check_first``) moved to the end."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    frame = pd.DataFrame(
        {"u": np.asarray(confidence, dtype=float), "theme": list(themes), "service": list(services)}
    ).reset_index(drop=True)
    frame = frame.sort_values("u", kind="stable")
    frame["in_service"] = frame.groupby(["theme", "service"], sort=False).cumcount()
    frame = frame.sort_values(["in_service", "u"], kind="stable")
    frame["in_theme"] = frame.groupby("theme", sort=False).cumcount()
    order = frame.sort_values(["in_theme", "u"], kind="stable").index.to_numpy()
    head = order[:check_first]
    if len(head) < 2:
        return order
    X = TfidfVectorizer(min_df=1).fit_transform([str(texts[i]) for i in head])
    similar = (X @ X.T).toarray() > max_similarity
    kept, dropped = [], []
    taken = np.zeros(len(head), dtype=bool)
    for k in range(len(head)):
        (dropped if similar[k, taken].any() else kept).append(k)
        taken[k] = k in kept[-1:]
    return np.concatenate([head[kept], head[dropped], order[check_first:]])


def review_queue(engine, audit: int = 50, seed: int = 0, limit: int | None = None) -> pd.DataFrame:
    """Tags to check: every uncorrected tag that needs review, in the order that teaches the
    model most (:func:`teaching_order`), then ``audit`` confident ones drawn at random, so the
    confident tags are checked too."""
    # By query: only the unsure and the drawn rows leave the database. With a limit, the teaching
    # order is taken among the least confident few times that many, so memory stays bounded.
    unsure = store.unsure_to_review(engine, None if limit is None else 5 * limit)
    unsure = unsure.iloc[
        teaching_order(
            unsure["text_redacted"].fillna("").tolist(),
            unsure["theme_confidence"].to_numpy(dtype=float),
            unsure["theme"].to_numpy(),
            unsure["service"].fillna("").to_numpy(),
        )
    ]
    if limit is not None:
        unsure = unsure.head(limit)
    sample = store.confident_sample(engine, np.random.default_rng(seed), audit)
    queue = pd.concat(
        [unsure.assign(why_listed="model unsure"), sample.assign(why_listed="audit sample of confident tags")]
    )
    return pd.DataFrame(
        {
            "complaint_id": queue["complaint_id"],
            "received_date": queue["received_date"].astype(str),
            "service": queue["service"].fillna(""),
            "text": redact(queue["text_redacted"].fillna("").tolist()),  # again: defence in depth
            "model_theme": queue["theme"],
            "confidence": queue["theme_confidence"].astype(float).round(3),
            "evidence": queue["evidence"].fillna(""),
            "why_listed": queue["why_listed"],
            "analyst_theme": "",
            "analyst_note": "",
        },
        columns=REVIEW_COLUMNS,
    ).reset_index(drop=True)


def export_review(
    engine, settings: Settings, path: Path, audit: int = 50, seed: int = 0, limit: int | None = None
) -> int:
    """Write the review file (XLSX) with a drop-down of the taxonomy's themes; returns its rows."""
    from openpyxl.worksheet.datavalidation import DataValidation

    queue = review_queue(engine, audit, seed, limit)
    themes = Taxonomy.from_file(settings.taxonomy_path).theme_names
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        neutralise_formulas(queue).to_excel(writer, sheet_name=SHEET, index=False)
        pd.DataFrame({"theme": themes}).to_excel(writer, sheet_name="themes", index=False)
        pd.DataFrame({"about this sheet": ORDER_NOTE}).to_excel(writer, sheet_name="about", index=False)
        sheet = writer.sheets[SHEET]
        column = REVIEW_COLUMNS.index("analyst_theme") + 1
        letter = sheet.cell(row=1, column=column).column_letter
        choice = DataValidation(type="list", formula1=f"=themes!$A$2:$A${len(themes) + 1}", allow_blank=True)
        choice.error = "Choose a theme from the list (sheet 'themes')."
        sheet.add_data_validation(choice)
        choice.add(f"{letter}2:{letter}{max(2, len(queue) + 1)}")
        sheet.freeze_panes = "B2"
    log.info("review file written", extra={"fields": {"rows": len(queue), "file": str(path)}})
    return len(queue)


@dataclass
class ImportSummary:
    stored: int
    unchanged: int
    quarantined: int
    quarantine_file: Path | None

    @property
    def exit_code(self) -> int:
        return 3 if self.quarantined else 0


def _cells(path: Path) -> pd.DataFrame:
    """The review sheet as strings, formulas as written (never evaluated), with row numbers."""
    from openpyxl import load_workbook

    try:
        book = load_workbook(path, read_only=True, data_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable workbook is the same error to a user
        raise InputError(f"{path}: not a readable XLSX file ({type(err).__name__})") from None
    if SHEET not in book.sheetnames:
        raise InputError(f"{path}: sheet {SHEET!r} not found; sheets are: {', '.join(book.sheetnames)}")
    rows = list(book[SHEET].iter_rows(values_only=True))
    book.close()
    if not rows:
        raise InputError(f"{path}: sheet {SHEET!r} is empty")
    header = [str(h).strip() if h is not None else "" for h in rows[0]]
    for needed in ("complaint_id", "analyst_theme"):
        if needed not in header:
            raise InputError(f"{path}: column {needed!r} not found; columns are: {', '.join(header)}")
    frame = pd.DataFrame(rows[1:], columns=header).astype(object)
    frame = frame.where(frame.notna(), "").map(lambda v: str(v).strip())
    return frame.assign(source_row=np.arange(2, len(frame) + 2))  # spreadsheet row numbers


def import_review(engine, settings: Settings, path: Path, reviewer: str | None = None) -> ImportSummary:
    """Store the analysts' themes from a review file; bad rows go to quarantine with reasons."""
    taxonomy = Taxonomy.from_file(settings.taxonomy_path)
    names = {n.lower(): n for n in taxonomy.theme_names}
    roll_up = {k.lower(): v for k, v in taxonomy.roll_up().items()}
    frame = _cells(path)
    theme = frame["analyst_theme"]
    filled = theme != ""
    frame = frame[filled | (frame.get("analyst_note", "") != "")]
    theme = frame["analyst_theme"]
    resolved = theme.str.lower().map(lambda t: names.get(t) or roll_up.get(t))
    reason = pd.Series(None, index=frame.index, dtype=object)
    column = pd.Series("analyst_theme", index=frame.index, dtype=object)
    formula = theme.str.startswith(FORMULA_START)
    reason[formula] = "analyst_theme is a formula, not a theme: " + theme[formula].str.slice(0, 40)
    reason[reason.isna() & (theme == "")] = "analyst_theme is empty (a note was given but no theme)"
    unknown = reason.isna() & resolved.isna()
    reason[unknown] = (
        "analyst_theme " + ("'" + theme[unknown].str.slice(0, 60) + "'") + f" is not a theme of taxonomy "
        f"{taxonomy.name!r} (themes: {', '.join(taxonomy.theme_names)})"
    )
    missing_id = reason.isna() & (frame["complaint_id"] == "")
    reason[missing_id], column[missing_id] = "complaint_id is empty", "complaint_id"
    known = store.existing_complaints(engine, frame.loc[reason.isna(), "complaint_id"].tolist())
    not_found = reason.isna() & ~frame["complaint_id"].isin(known)
    reason[not_found], column[not_found] = "complaint_id not found in the results store", "complaint_id"
    bad = reason.notna()
    good = frame[~bad].assign(theme=resolved[~bad])
    stored = store.write_corrections(
        engine,
        good[["complaint_id", "theme", "source_row"]],
        reviewer or getpass.getuser(),
        path.name,
    )
    quarantine_file = None
    if bad.any():
        quarantine_file = settings.output_dir / f"review-quarantine-{dt.datetime.now():%Y%m%dT%H%M%S}.csv"
        writer = TableWriter(quarantine_file)
        writer.write(
            frame[bad][["complaint_id", "source_row"]].assign(_file=str(path), _column=column[bad], _reason=reason[bad])
        )
        writer.close()
        for row, col, why in zip(frame.loc[bad, "source_row"], column[bad], reason[bad]):
            log.warning(
                "review row quarantined",
                extra={"fields": {"file": path.name, "row": int(row), "column": col, "reason": why[:120]}},
            )
    return ImportSummary(stored, len(good) - stored, int(bad.sum()), quarantine_file)
