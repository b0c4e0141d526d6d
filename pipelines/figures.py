"""The figures a complaints manager watches, as pure functions of a frame of complaints:
acknowledgement within 3 working days, time to close, outcomes, learning actions, and the
headline figures beside a year earlier.

A frame is either one row per complaint, as the report runner reads it from the store, or its
*facts* (:func:`facts`, :func:`reduce_facts`): per combination of what the figures count (a
service, a month, the working days to close, ...), how many complaints (``n``). Counting facts
gives the same figures as counting rows, and their number does not grow with the rows', so a
report over a million complaints is read in chunks and kept small.

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


# What :func:`facts` derives from a complaint's dates and fields, and the columns it keeps as they are.
FACT_COLUMNS = ["ack_recorded", "ack_met", "closed", "close_days", "within_six", "has_deadline", "soon", "ombudsman"]
FACT_KEYS = ["in_period", "month", "kind", "reported_theme", "service", "outcome", "learning_status", "queue"]


def facts(rows: pd.DataFrame, today: dt.date | None = None) -> pd.DataFrame:
    """``rows`` (one per complaint) with what the figures count added, and ``n`` = 1:
    acknowledged (date recorded, within 3 working days), closed (working days from receipt,
    within 6 months), learning stage started, due in the next 5 working days (given ``today``),
    referred to the Ombudsman."""
    received = pd.to_datetime(rows["received_date"]).reset_index(drop=True)
    closed_at = pd.to_datetime(rows["closed_date"]).reset_index(drop=True)
    closed = closed_at.notna().to_numpy()
    days = np.full(len(rows), -1, dtype=np.int64)
    days[closed] = working_days_between(received[closed], closed_at[closed]).astype(np.int64)
    acknowledged = pd.to_datetime(rows["acknowledged_date"]).reset_index(drop=True)
    deadline = pd.to_datetime(rows["learning_deadline"]).reset_index(drop=True)
    soon = np.zeros(len(rows), dtype=bool)
    if today is not None:
        completed = pd.Series(rows["learning_completed_date"]).isna().to_numpy()
        soon = (
            completed
            & (deadline >= pd.Timestamp(today)).to_numpy()
            & (deadline < pd.Timestamp(due_soon_before(today))).to_numpy()
        )
    ombudsman = rows["ombudsman_referral"].fillna("").astype(str).str.strip().str.lower()
    return rows.assign(
        ack_recorded=acknowledged.notna().to_numpy(),
        ack_met=(acknowledged <= pd.to_datetime(rows["acknowledgement_deadline"]).reset_index(drop=True)).to_numpy(),
        closed=closed,
        close_days=days,
        within_six=(closed_at <= received + SIX_MONTHS).to_numpy(),
        has_deadline=deadline.notna().to_numpy(),
        soon=soon,
        ombudsman=ombudsman.isin({"yes", "y", "true", "1"}).to_numpy(),
        n=1,
    )


def reduce_facts(frame: pd.DataFrame) -> pd.DataFrame:
    """Facts with equal values merged, ``n`` summed: the key columns present and the facts."""
    keys = [c for c in FACT_KEYS + FACT_COLUMNS if c in frame.columns]
    if frame.empty:
        return frame[keys + ["n"]].reset_index(drop=True)
    return frame.groupby(keys, dropna=False, sort=False)["n"].sum().reset_index()


def as_facts(frame: pd.DataFrame, today: dt.date | None = None) -> pd.DataFrame:
    return frame if "n" in frame.columns else facts(frame, today)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The ``q`` quantile of ``values`` repeated ``weights`` times, interpolated linearly as
    numpy's default (so the median of facts is the median of the complaints)."""
    order = np.argsort(values, kind="stable")
    values, cumulative = np.asarray(values, dtype=float)[order], np.cumsum(np.asarray(weights)[order])
    if not len(values) or cumulative[-1] == 0:
        return np.nan
    position = q * (cumulative[-1] - 1)
    below, above = np.floor(position), np.ceil(position)
    low = values[np.searchsorted(cumulative, below, side="right")]
    high = values[np.searchsorted(cumulative, above, side="right")]
    return float(low + (high - low) * (position - below))


def normalise_outcome(word) -> str:
    text = re.sub(r"[^a-z ]+", " ", str(word or "").lower().replace("-", " "))
    return " ".join(text.split())


def outcome_of(words: pd.Series) -> pd.Series:
    """Each outcome word as one of :data:`OUTCOMES`."""
    normal = words.map(normalise_outcome)
    mapped = normal.map(OUTCOME_WORDS)
    return mapped.where(normal == "", mapped.fillna("not recognised")).fillna("no outcome recorded")


def unrecognised_outcomes(words: pd.Series, weights: pd.Series | None = None) -> pd.DataFrame:
    """The outcome words not in the table, with how many complaints use each (to add to the
    table); ``weights``: how many complaints each word stands for (facts), else one each."""
    given = words.fillna("").astype(str).str.strip()
    weights = pd.Series(1, index=words.index) if weights is None else weights
    unknown = (given != "") & (outcome_of(given) == "not recognised")
    counts = weights[unknown].groupby(given[unknown]).sum().sort_values(ascending=False, kind="stable")
    counts = counts.rename("complaints").to_frame()
    counts.index.name = "outcome word in the export"
    return counts


def counts_by(frame: pd.DataFrame, rows: str, columns: pd.Series, order: list[str]) -> pd.DataFrame:
    """A whole-number cross-table of ``frame[rows]`` by ``columns`` (complaints: ``n`` each),
    with every column of ``order``."""
    weights = frame["n"] if "n" in frame.columns else pd.Series(1, index=frame.index)
    table = pd.crosstab(frame[rows], columns, values=weights, aggfunc="sum")
    table = table.reindex(columns=order).fillna(0).astype(int)
    table.columns.name = None
    return table


def outcomes(complaints: pd.DataFrame, by: str) -> pd.DataFrame:
    return counts_by(complaints, by, outcome_of(complaints["outcome"]), OUTCOMES)


def acknowledgement(complaints: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per group: complaints received, how many have an acknowledgement date, how many of those
    were acknowledged within 3 working days (bank holidays excluded) and the share."""
    f = as_facts(complaints)
    work = pd.DataFrame({by: f[by], "received": f["n"], "recorded": f["n"] * f["ack_recorded"]})
    grouped = work.assign(met=f["n"] * (f["ack_recorded"] & f["ack_met"])).groupby(by)
    table = grouped[["received", "recorded", "met"]].sum().astype(int)
    table.columns = ["received", "date recorded", f"met ({ACKNOWLEDGEMENT_WORKING_DAYS} working days)"]
    table["% met"] = _percent(table.iloc[:, 2], table.iloc[:, 1])
    return table


def closure(complaints: pd.DataFrame, by: str, target_days: int) -> pd.DataFrame:
    """Per group: complaints closed, median and 90th percentile working days from receipt to
    closure (linear interpolation, as numpy), and the shares closed within the council's
    target and within 6 months."""
    f = as_facts(complaints)
    closed = f[f["closed"]]
    rows = {}
    for key, group in closed.groupby(by):
        days, n = group["close_days"].to_numpy(), group["n"].to_numpy()
        total = int(n.sum())
        rows[key] = {
            "closed": total,
            "median working days": weighted_quantile(days, n, 0.5),
            "90th percentile": weighted_quantile(days, n, 0.9),
            f"% within {target_days} working days": 100 * n[days <= target_days].sum() / total if total else np.nan,
            "% within 6 months": 100 * n[group["within_six"].to_numpy()].sum() / total if total else np.nan,
        }
    columns = [
        "closed",
        "median working days",
        "90th percentile",
        f"% within {target_days} working days",
        "% within 6 months",
    ]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns)
    table.index.name = by
    table["closed"] = table["closed"].astype(int)
    return table.round(1)


def learning_actions(closed: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """Learning stages by service: completed on time, late, overdue, open (incl. due soon), and
    how many of the open ones fall due in the next 5 working days."""
    f = as_facts(closed, today)
    status = f["learning_status"].replace({"due soon": "open"})
    table = counts_by(f, "service", status, LEARNING_COLUMNS)
    soon = (f["n"] * f["soon"]).groupby(f["service"]).sum()
    table["due in next 5 working days"] = soon.reindex(table.index).fillna(0).astype(int)
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
    f = as_facts(frame)
    complaints = f[f["kind"] != "compliment"]
    n = complaints["n"]
    outcome = outcome_of(complaints["outcome"])
    closed = complaints[complaints["closed"]]
    days, weights = closed["close_days"].to_numpy(), closed["n"].to_numpy()
    ack = acknowledgement(complaints.assign(all="all"), "all")
    decided = outcome.isin(["upheld", "partly upheld", "not upheld"])
    return {
        "Complaints received": int(n.sum()),
        "Compliments received": int(f["n"].sum() - n.sum()),
        "% acknowledged within 3 working days": float(ack["% met"].iloc[0]) if len(ack) else np.nan,
        "Complaints closed": int(weights.sum()),
        "Median working days to close": weighted_quantile(days, weights, 0.5) if len(days) else np.nan,
        f"% closed within {target_days} working days": _percent(
            pd.Series([weights[days <= target_days].sum()]), pd.Series([weights.sum()])
        ).iloc[0],
        "% upheld or partly upheld (of those decided)": _percent(
            pd.Series([n[outcome.isin(WELL_FOUNDED)].sum()]), pd.Series([n[decided].sum()])
        ).iloc[0],
        "Referred to the Ombudsman": int(n[complaints["ombudsman"]].sum()),
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
