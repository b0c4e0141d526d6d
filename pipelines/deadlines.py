"""Statutory and learning-stage deadlines in working days, with England and Wales bank
holidays from the maintained ``holidays`` package (no hand-written list).

* acknowledgement: 3 working days after a complaint is received;
* learning stage: an action plan completed within 20 working days after the complaint closes.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

ACKNOWLEDGEMENT_WORKING_DAYS = 3
LEARNING_STAGE_WORKING_DAYS = 20
DUE_SOON_WORKING_DAYS = 5


@lru_cache(maxsize=8)
def bank_holidays(first_year: int, last_year: int) -> np.ndarray:
    """England and Wales bank holidays (the two share one list) as datetime64[D]."""
    days = holidays.country_holidays("GB", subdiv="ENG", years=range(first_year, last_year + 1))
    return np.array(sorted(days), dtype="datetime64[D]")


def _holidays_for(dates: np.ndarray) -> np.ndarray:
    valid = dates[~np.isnat(dates)]
    if not len(valid):
        return np.array([], dtype="datetime64[D]")
    years = valid.astype("datetime64[Y]").astype(int) + 1970
    return bank_holidays(int(years.min()) - 1, int(years.max()) + 1)


def add_working_days(dates, days: int) -> np.ndarray:
    """The date ``days`` working days after each date (a weekend or bank holiday start counts
    from the working day before it, so the next working day is day 1); NaT stays NaT."""
    values = pd.to_datetime(pd.Series(dates)).to_numpy(dtype="datetime64[D]")
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[D]")
    ok = ~np.isnat(values)
    if ok.any():
        out[ok] = np.busday_offset(values[ok], days, roll="backward", holidays=_holidays_for(values))
    return out


def working_days_between(start, end) -> np.ndarray:
    """Working days from ``start`` (exclusive) to ``end`` (inclusive); negative when end is earlier."""
    a = pd.to_datetime(pd.Series(start)).to_numpy(dtype="datetime64[D]")
    b = pd.to_datetime(pd.Series(end)).to_numpy(dtype="datetime64[D]")
    hol = _holidays_for(np.concatenate([a, b]))
    out = np.full(len(a), np.nan)
    ok = ~(np.isnat(a) | np.isnat(b))
    out[ok] = np.busday_count(a[ok] + 1, b[ok] + 1, holidays=hol)
    return out


def learning_stage(closed, completed, today: dt.date) -> pd.DataFrame:
    """Deadline and status of each complaint's learning stage.

    Status: ``not closed`` (no closure yet), ``completed on time``, ``completed late``,
    ``overdue``, ``due soon`` (within 5 working days) or ``open``.
    """
    closed = pd.to_datetime(pd.Series(closed), errors="coerce")
    completed = pd.to_datetime(pd.Series(completed), errors="coerce")
    deadline = pd.Series(add_working_days(closed, LEARNING_STAGE_WORKING_DAYS)).dt.date
    deadline_ts = pd.to_datetime(deadline)
    today_ts = pd.Timestamp(today)
    remaining = working_days_between([today] * len(closed), deadline_ts)
    status = np.select(
        [
            closed.isna(),
            completed.notna() & (completed <= deadline_ts),
            completed.notna(),
            deadline_ts < today_ts,
            remaining <= DUE_SOON_WORKING_DAYS,
        ],
        ["not closed", "completed on time", "completed late", "overdue", "due soon"],
        default="open",
    )
    return pd.DataFrame({"learning_deadline": deadline.where(closed.notna(), None), "learning_status": status})


def due_soon_before(today: dt.date) -> dt.date:
    """The first date more than 5 working days after ``today``: an open learning stage whose
    deadline is from today up to (not including) this date is due soon, as in :func:`learning_stage`."""
    return pd.Timestamp(add_working_days([today], DUE_SOON_WORKING_DAYS + 1)[0]).date()


def acknowledgement_deadline(received) -> pd.Series:
    return pd.Series(add_working_days(received, ACKNOWLEDGEMENT_WORKING_DAYS)).dt.date
