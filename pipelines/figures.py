"""The figures a complaints manager watches, as pure functions of a frame of complaints (one row
per complaint, as the report runner reads it from the store): acknowledgement within 3 working
days, time to close, outcomes, learning actions, and the headline figures beside a year earlier.

Nothing here reads a file or a database, so each figure can be checked by hand on a small frame.
Counts stay numbers; suppression of small numbers is applied where they are shown.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from pipelines.deadlines import ACKNOWLEDGEMENT_WORKING_DAYS, due_soon_before, working_days_between

SIX_MONTHS = pd.DateOffset(months=6)  # the statutory outer limit for a response

# The outcome words councils write, read into the four outcomes of the annual report. Keys are
# normalised (lower case, punctuation and repeated spaces removed); anything else is listed as
# "not recognised" with its words, never dropped.
OUTCOME_WORDS = {
    "upheld": "upheld",
    "fully upheld": "upheld",
    "well founded": "upheld",
    "justified": "upheld",
    "substantiated": "upheld",
    "partly upheld": "partly upheld",
    "partially upheld": "partly upheld",
    "part upheld": "partly upheld",
    "partially well founded": "partly upheld",
    "partly justified": "partly upheld",
    "partially justified": "partly upheld",
    "partially substantiated": "partly upheld",
    "not upheld": "not upheld",
    "unfounded": "not upheld",
    "not well founded": "not upheld",
    "not justified": "not upheld",
    "unjustified": "not upheld",
    "unsubstantiated": "not upheld",
    "not substantiated": "not upheld",
    "withdrawn": "withdrawn",
    "withdrawn by complainant": "withdrawn",
    "closed withdrawn": "withdrawn",
}
OUTCOMES = ["upheld", "partly upheld", "not upheld", "withdrawn", "not recognised", "no outcome recorded"]
WELL_FOUNDED = ("upheld", "partly upheld")
LEARNING_COLUMNS = ["completed on time", "completed late", "overdue", "open"]


def normalise_outcome(word) -> str:
    text = re.sub(r"[^a-z ]+", " ", str(word or "").lower().replace("-", " "))
    return " ".join(text.split())


def outcome_of(words: pd.Series) -> pd.Series:
    """Each outcome word as one of :data:`OUTCOMES`."""
    normal = words.map(normalise_outcome)
    mapped = normal.map(OUTCOME_WORDS)
    return mapped.where(normal == "", mapped.fillna("not recognised")).fillna("no outcome recorded")


def unrecognised_outcomes(words: pd.Series) -> pd.DataFrame:
    """The outcome words not in the table, with how many complaints use each (to add to the table)."""
    given = words.fillna("").astype(str).str.strip()
    unknown = given[(given != "") & (outcome_of(given) == "not recognised")]
    counts = unknown.value_counts().rename("complaints").to_frame()
    counts.index.name = "outcome word in the export"
    return counts


def counts_by(frame: pd.DataFrame, rows: str, columns: pd.Series, order: list[str]) -> pd.DataFrame:
    """A whole-number cross-table of ``frame[rows]`` by ``columns``, with every column of ``order``."""
    table = pd.crosstab(frame[rows], columns).reindex(columns=order, fill_value=0).astype(int)
    table.columns.name = None
    return table


def outcomes(complaints: pd.DataFrame, by: str) -> pd.DataFrame:
    return counts_by(complaints, by, outcome_of(complaints["outcome"]), OUTCOMES)


def acknowledgement(complaints: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per group: complaints received, how many have an acknowledgement date, how many of those
    were acknowledged within 3 working days (bank holidays excluded) and the share."""
    recorded = complaints["acknowledged_date"].notna()
    met = recorded & (
        pd.to_datetime(complaints["acknowledged_date"]) <= pd.to_datetime(complaints["acknowledgement_deadline"])
    )
    grouped = pd.DataFrame({by: complaints[by], "received": 1, "recorded": recorded, "met": met}).groupby(by)
    table = grouped[["received", "recorded", "met"]].sum().astype(int)
    table.columns = ["received", "date recorded", f"met ({ACKNOWLEDGEMENT_WORKING_DAYS} working days)"]
    table["% met"] = _percent(table.iloc[:, 2], table.iloc[:, 1])
    return table


def closure(complaints: pd.DataFrame, by: str, target_days: int) -> pd.DataFrame:
    """Per group: complaints closed, median and 90th percentile working days from receipt to
    closure (linear interpolation, as numpy), and the shares closed within the council's
    target and within 6 months."""
    closed = complaints[complaints["closed_date"].notna()]
    days = working_days_between(closed["received_date"], closed["closed_date"])
    received = pd.to_datetime(closed["received_date"]).reset_index(drop=True)
    within_six = (pd.to_datetime(closed["closed_date"]).reset_index(drop=True) <= received + SIX_MONTHS).to_numpy()
    work = pd.DataFrame({by: closed[by].to_numpy(), "days": days, "target": days <= target_days, "six": within_six})
    grouped = work.groupby(by)
    table = pd.DataFrame(
        {
            "closed": grouped.size().astype(int),
            "median working days": grouped["days"].median(),
            "90th percentile": grouped["days"].quantile(0.9),
            f"% within {target_days} working days": _percent(grouped["target"].sum(), grouped.size()),
            "% within 6 months": _percent(grouped["six"].sum(), grouped.size()),
        }
    )
    return table.round(1)


def learning_actions(closed: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """Learning stages by service: completed on time, late, overdue, open (incl. due soon), and
    how many of the open ones fall due in the next 5 working days."""
    status = closed["learning_status"].replace({"due soon": "open"})
    table = counts_by(closed, "service", status, LEARNING_COLUMNS)
    deadline = pd.to_datetime(closed["learning_deadline"])
    soon = (
        closed["learning_completed_date"].isna()
        & (deadline >= pd.Timestamp(today))
        & (deadline < pd.Timestamp(due_soon_before(today)))
    )
    table["due in next 5 working days"] = soon.groupby(closed["service"]).sum().reindex(table.index).astype(int)
    return table


def overdue_learning(closed: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """The overdue learning stages the Customer Relations Team chases, most overdue first."""
    late = closed[closed["learning_status"] == "overdue"]
    days = working_days_between(late["learning_deadline"], [today] * len(late))
    table = pd.DataFrame(
        {
            "case reference": late["complaint_id"].to_numpy(),
            "service": late["service"].to_numpy(),
            "due date": late["learning_deadline"].astype(str).to_numpy(),
            "working days overdue": days.astype(int),
        }
    )
    return table.sort_values(["working days overdue", "case reference"], ascending=[False, True]).set_index(
        "case reference"
    )


def headline(frame: pd.DataFrame, target_days: int) -> dict[str, float]:
    """The period's headline figures (counts and percentages) from its feedback."""
    complaints = frame[frame["kind"] != "compliment"]
    outcome = outcome_of(complaints["outcome"])
    closed = complaints[complaints["closed_date"].notna()]
    days = working_days_between(closed["received_date"], closed["closed_date"])
    ack = acknowledgement(complaints.assign(all="all"), "all")
    ombudsman = complaints["ombudsman_referral"].fillna("").str.strip().str.lower().isin({"yes", "y", "true", "1"})
    decided = outcome.isin(["upheld", "partly upheld", "not upheld"])
    return {
        "Complaints received": len(complaints),
        "Compliments received": len(frame) - len(complaints),
        "% acknowledged within 3 working days": float(ack["% met"].iloc[0]) if len(ack) else np.nan,
        "Complaints closed": len(closed),
        "Median working days to close": float(np.median(days)) if len(days) else np.nan,
        f"% closed within {target_days} working days": _percent(
            pd.Series([(days <= target_days).sum()]), pd.Series([len(days)])
        ).iloc[0],
        "% upheld or partly upheld (of those decided)": _percent(
            pd.Series([outcome.isin(WELL_FOUNDED).sum()]), pd.Series([decided.sum()])
        ).iloc[0],
        "Referred to the Ombudsman": int(ombudsman.sum()),
    }


def compare(now: dict[str, float], before: dict[str, float]) -> pd.DataFrame:
    """Each headline figure beside the same period a year earlier, with the change."""
    table = pd.DataFrame({"this period": pd.Series(now), "a year earlier": pd.Series(before)})
    table["change"] = (table["this period"] - table["a year earlier"]).round(1)
    table.index.name = "figure"
    return table


def _percent(part: pd.Series, whole: pd.Series) -> pd.Series:
    """part / whole as a percentage to one decimal; empty where the whole is 0."""
    whole = whole.astype(float)
    return (100 * part.astype(float) / whole.where(whole > 0)).round(1)
