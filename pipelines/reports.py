"""What people read: the analysts' theme report (HTML and XLSX) and the team managers' learning
bulletin (HTML and Markdown), built from the results store.

Safe to circulate by construction: text comes from the store already redacted and is redacted
again here; HTML is rendered by Jinja2 with autoescaping; spreadsheet cells that would run as
formulas are neutralised; counts under the suppression threshold are shown as "<5" in every
breakdown that could point at a person. Charts are SVG embedded in the page (no request leaves
the file), each with alt text and the same numbers in a table beside it.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from scipy.stats import binomtest

from pipelines import figures, store, tracking
from pipelines.config import Settings
from pipelines.deadlines import LEARNING_STAGE_WORKING_DAYS
from pipelines.tables import neutralise_formulas
from pipelines.taxonomy import sentence_case
from pipelines.text import redact

log = logging.getLogger(__name__)

# Okabe-Ito: distinguishable with the common forms of colour blindness. Lines also differ by
# marker and dash, so nothing is told by colour alone.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":"]
EMERGING_BASELINE_MONTHS = 6
EMERGING_ALPHA = 0.01
MAX_TABLE_COLUMNS = 6  # value columns per table on screen: wider tables are split to fit 640 px
# The columns a report reads from the store (no complaint text: examples are read by id).
REPORT_COLUMNS = [
    "complaint_id",
    "source_file",
    "received_date",
    "closed_date",
    "acknowledged_date",
    "acknowledgement_deadline",
    "service",
    "outcome",
    "ombudsman_referral",
    "human_theme",
    "feedback_type_given",
    "learning_completed_date",
    "learning_deadline",
    "learning_status",
    "analyst_theme",
    "theme",
    "theme_confidence",
    "needs_review",
    "evidence",
    "feedback_type",
    "model_version",
]


# --------------------------------------------------------------------------- the numbers


def reporting_theme(frame: pd.DataFrame) -> pd.Series:
    """The theme reported for each complaint: people decide, so an analyst's correction first,
    then the theme recorded in the export, and the model's only when neither exists."""
    people, _ = store.people_theme(frame)
    return people.where(people != "", frame["theme"].fillna("untagged"))


def emerging_themes(
    monthly: pd.DataFrame,
    baseline_months: int = EMERGING_BASELINE_MONTHS,
    alpha: float = EMERGING_ALPHA,
    min_count: int = 5,
) -> pd.DataFrame:
    """Themes whose count in the last month is significantly above their own baseline.

    ``monthly``: counts, one row per month (oldest first), one column per theme. The test is
    the exact conditional test for two Poisson rates: under "no change", of the n complaints
    on a theme in the last month and the ``baseline_months`` before it, the number in the last
    month is Binomial(n, 1 / (baseline_months + 1)); one-sided, with a Bonferroni correction
    for the number of themes tested. Months with no complaints in the baseline count as zero.
    A theme with fewer than ``min_count`` complaints this month is not flagged (too few to act
    on, and small enough to be suppressed in the report).
    """
    columns = ["theme", "month", "count", "baseline_mean", "ratio", "p_value", "p_adjusted", "emerging"]
    if len(monthly) < 2 or not len(monthly.columns):
        return pd.DataFrame(columns=columns)
    current = monthly.iloc[-1]
    baseline = monthly.iloc[-(baseline_months + 1) : -1]
    months = len(baseline)
    rows = []
    for theme in monthly.columns:
        c1, c0 = int(current[theme]), int(baseline[theme].sum())
        p = binomtest(c1, c1 + c0, 1 / (months + 1), alternative="greater").pvalue if c1 + c0 else 1.0
        mean = c0 / months
        rows.append(
            {
                "theme": theme,
                "month": str(monthly.index[-1]),
                "count": c1,
                "baseline_mean": round(mean, 2),
                "ratio": round(c1 / mean, 2) if mean else float("inf") if c1 else 1.0,
                "p_value": p,
            }
        )
    out = pd.DataFrame(rows)
    out["p_adjusted"] = np.minimum(1.0, out["p_value"] * len(out))
    out["emerging"] = (out["p_adjusted"] < alpha) & (out["count"] >= min_count)
    return out[columns].sort_values(["emerging", "p_value"], ascending=[False, True]).reset_index(drop=True)


def highlight(text: str, evidence: str) -> list[tuple[str, bool]]:
    """The text cut into (piece, is_evidence) so a template can mark the evidence words
    without building HTML by hand."""
    terms = [t.strip() for t in str(evidence or "").split(";") if t.strip()]
    if not terms or not text:
        return [(text, False)]
    pattern = re.compile(
        r"\b("
        + "|".join(r"\s+".join(map(re.escape, t.split())) for t in sorted(terms, key=len, reverse=True))
        + r")\b",
        re.IGNORECASE,
    )
    pieces, last = [], 0
    for match in pattern.finditer(text):
        if match.start() > last:
            pieces.append((text[last : match.start()], False))
        pieces.append((match.group(0), True))
        last = match.end()
    if last < len(text):
        pieces.append((text[last:], False))
    return pieces


def champion_quality(settings: Settings) -> dict | None:
    """Macro-F1 and per-theme F1 of the current champion, from its training run's evaluation,
    and what that evaluation was measured on."""
    record = tracking.champion_record(settings)
    if record is None:
        log.warning("model quality not available", extra={"fields": {"model": settings.model_name}})
        return None
    metrics, params = record["evaluation"], record["params"]
    return {
        "model": f"{settings.model_name} version {record['version']}",
        "macro_f1": metrics.get("macro_f1"),
        "measured_on": measured_on(params, metrics.get("n_evaluated")),
        "per_theme": pd.DataFrame(
            [
                {"theme": k, "f1": v.get("f1"), "support": v.get("support")}
                for k, v in metrics.get("per_theme", {}).items()
            ]
        ),
    }


def measured_on(params: dict, n) -> str:
    """Where a model's quality figures come from, in words, from its training run's parameters."""
    method = params.get("evaluation") or "held-out texts"
    crosswalk = params.get("crosswalk") or ""
    if "fft" in crosswalk.lower():
        what = "NHS Friends and Family Test feedback mapped to your themes"
    elif crosswalk:
        what = f"another framework's labelled feedback mapped to your themes ({crosswalk})"
    else:
        what = f"your own labelled complaints ({params.get('input_file') or 'the training file'})"
    return f"measured on {what} ({method}, n = {n if n is not None else 'unknown'})"


# --------------------------------------------------------------------------- charts


def _svg_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width=7.5, height=3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "font.family": "sans-serif"})
    return plt.subplots(figsize=(width, height))


def _count_axis(axis) -> None:
    """Counts: whole numbers from 0 (matplotlib would centre an all-zero axis on 0, below it)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def bar_chart(values: pd.Series, below: int, xlabel: str) -> str | None:
    """Horizontal bars with the value written at each bar; suppressed values are not drawn.
    None when nothing would be drawn: no empty charts."""
    values = values.astype(int)
    shown = values.where(values >= below, 0)
    if not (shown > 0).any():
        return None
    fig, ax = _figure(height=0.45 * len(values) + 1)
    ax.barh(range(len(values)), shown.to_numpy(), color=PALETTE[0])
    ax.set_yticks(range(len(values)), [str(i) for i in values.index])
    ax.invert_yaxis()
    for i, (v, s) in enumerate(zip(values, shown)):
        ax.text(s, i, f" {v}" if v >= below or v == 0 else f" <{below}", va="center")
    ax.set_xlabel(xlabel)
    ax.set_xlim(left=0, right=max(1, shown.max()) * 1.15)
    _count_axis(ax.xaxis)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg_data_uri(fig)


def line_chart(table: pd.DataFrame, below: int, ylabel: str) -> str | None:
    """One line per column, each with its own marker and dash as well as colour; points under
    the suppression threshold are left out. None when no point would be drawn."""
    drawn = table.where(table >= below)
    if not len(table.columns) or drawn.isna().all().all():
        return None
    fig, ax = _figure()
    x = np.arange(len(table))
    for i, column in enumerate(table.columns):
        ax.plot(
            x,
            drawn[column].astype(float),
            label=str(column),
            color=PALETTE[i % len(PALETTE)],
            marker=MARKERS[i % len(MARKERS)],
            linestyle=DASHES[i % len(DASHES)],
        )
    ax.set_xticks(x, [str(i) for i in table.index], rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0, top=max(1, float(drawn.max().max())) * 1.1)
    _count_axis(ax.yaxis)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    ax.spines[["top", "right"]].set_visible(False)
    return _svg_data_uri(fig)


# --------------------------------------------------------------------------- the theme report


@dataclass
class Table:
    """A table of numbers (counts stay numbers); ``counts``: the columns whose 1 to
    suppress_below - 1 are shown as "<N" (True: every column)."""

    caption: str
    frame: pd.DataFrame
    counts: bool | tuple[str, ...] = ()
    max_rows: int | None = None  # on the page; the workbook has every row

    def count_columns(self) -> list:
        return list(self.frame.columns) if self.counts is True else [c for c in self.counts if c in self.frame]

    def suppressed(self, below: int) -> pd.DataFrame:
        """The frame as object values with small counts replaced by "<N": what may be shown."""
        out = self.frame.astype(object).where(self.frame.notna(), None)
        for column in self.count_columns():
            values = pd.to_numeric(self.frame[column], errors="coerce")
            out[column] = out[column].where(~((values > 0) & (values < below)), f"<{below}")
        return out

    def shown(self, below: int) -> pd.DataFrame:
        """Text for the page: whole numbers without ".0", other numbers to one decimal."""
        return self.suppressed(below).map(format_value)

    def pieces(self, below: int, width: int = MAX_TABLE_COLUMNS) -> list[tuple[str, pd.DataFrame]]:
        """(caption, text frame) pieces of at most ``width`` value columns, so none needs to
        scroll sideways at 640 px; the row labels repeat in each piece."""
        shown, caption = self.shown(below), self.caption
        if self.max_rows is not None and len(shown) > self.max_rows:
            caption = f"{caption}: the first {self.max_rows} of {len(shown)} (all in the workbook)"
            shown = shown.head(self.max_rows)
        n = max(1, -(-len(shown.columns) // width))
        if n == 1:
            return [(caption, shown)]
        return [(f"{caption} ({i + 1} of {n})", shown.iloc[:, i * width : (i + 1) * width]) for i in range(n)]


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer():
            return str(int(value))
        return f"{value:.2g}" if abs(value) < 1 else f"{value:.1f}"  # p-values, F1: two significant digits
    return str(value)


@dataclass
class Section:
    """A heading, optional chart (with alt text) and the tables beside it."""

    title: str
    intro: str = ""
    chart: str | None = None
    alt: str = ""
    tables: list[Table] = field(default_factory=list)


@dataclass
class ThemeReport:
    title: str
    period: str
    generated: str
    suppress_below: int
    sections: list[Section]
    examples: dict[str, list[list[tuple[str, bool]]]]
    about: dict[str, str] = field(default_factory=dict)

    def sheets(self) -> dict[str, pd.DataFrame]:
        """The report's tables for the workbook, one sheet each, numbers as numbers and
        suppressed counts as "<N"."""
        out = {}
        for section in self.sections:
            for table in section.tables:
                name = re.sub(r"[\[\]:*?/\\]", " ", table.caption)[:31]
                frame = table.suppressed(self.suppress_below)
                out[name] = frame.reset_index() if frame.index.name else frame
        return out


@dataclass
class Digest:
    """What the theme report keeps of a window's complaints after one pass over them: the
    facts (:func:`pipelines.figures.facts`, merged: they do not grow with the rows), and the
    few rows it lists by case reference."""

    facts: pd.DataFrame  # with in_period, month, kind, reported_theme, service, ..., n
    oldest: pd.DataFrame  # the period's oldest unsure tags awaiting review
    overdue: pd.DataFrame  # the period's overdue learning stages
    chosen: pd.DataFrame  # the examples: the most confident complaints of each theme
    files: set = field(default_factory=set)
    versions: set = field(default_factory=set)


@dataclass
class ReportData:
    """What the theme report is built from, read by :func:`load_report_data`: its digests, or
    frames of rows (as small tests give them) digested when the report is built."""

    frame: pd.DataFrame  # complaints received from the emerging-theme baseline to the period's end
    previous: pd.DataFrame  # the same period a year earlier
    start: dt.date
    end: dt.date
    today: dt.date
    service: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # theme id -> label
    quality: dict | None = None
    texts: pd.DataFrame | None = None  # complaint_id, text_redacted of the example complaints
    now: Digest | None = None  # the digest of ``frame``, when read from the store in chunks
    before: Digest | None = None  # the digest of ``previous``


OLDEST_SHOWN = 20
CHUNK_ROWS = 20_000  # rows read from the store at a time: each chunk's objects are the report's transient memory
OVERDUE_COLUMNS = ["complaint_id", "service", "learning_deadline", "learning_status"]  # what the list shows
# The overdue list names at most this many stages, the longest overdue (the section says how
# many there are in all): a list the Customer Relations Team can work through, in bounded memory.
OVERDUE_LISTED = 5_000


def digest(chunks, labels: dict[str, str], start: dt.date | None, end: dt.date | None, today: dt.date) -> Digest:
    """One pass over chunks of complaint rows (as the store gives them): their facts merged,
    and the rows the report lists. ``start``/``end``: the period (None: every row is in it)."""
    facts, oldest, overdue, chosen, files, versions = [], None, None, None, set(), set()
    for rows in chunks:
        rows = prepare(rows, labels)
        received = pd.to_datetime(rows["received_date"])
        in_period = np.ones(len(rows), dtype=bool)
        if start is not None:
            in_period = ((received >= pd.Timestamp(start)) & (received <= pd.Timestamp(end))).to_numpy()
        unsure = rows["needs_review"].fillna(False).astype(bool) & (rows["human_theme"].fillna("") == "")
        rows = rows.assign(in_period=in_period, queue=unsure.to_numpy())
        facts.append(figures.reduce_facts(figures.facts(rows, today)))
        period = rows[in_period]
        late = period[period["learning_deadline"].notna() & (period["learning_status"] == "overdue")]
        # The lists are merged chunk by chunk, so only their own length is ever held.
        oldest = _oldest(pd.concat([oldest, period[period["queue"]]]))
        overdue = _most_overdue(pd.concat([overdue, late[OVERDUE_COLUMNS]]))
        chosen = example_ids(pd.concat([chosen, period[period["kind"] != "compliment"]]))
        files |= {Path(str(f)).name for f in period["source_file"].dropna().unique()}
        versions |= {str(v) for v in period["model_version"].dropna().unique()}
        if len(facts) >= 2:  # merged as they come: what is held is the facts, not the chunks
            facts = [figures.reduce_facts(pd.concat(facts, ignore_index=True))]
    if not facts:
        return digest([prepare_empty()], labels, start, end, today)
    merged = figures.reduce_facts(pd.concat(facts, ignore_index=True))
    return Digest(merged, oldest.reset_index(drop=True), overdue.reset_index(drop=True), chosen, files, versions)


def _most_overdue(late: pd.DataFrame) -> pd.DataFrame:
    """The OVERDUE_LISTED learning stages overdue longest (earliest deadline, then case reference)."""
    return late.sort_values(["learning_deadline", "complaint_id"], kind="stable").head(OVERDUE_LISTED)


def _oldest(queue: pd.DataFrame) -> pd.DataFrame:
    return queue.sort_values("received_date", kind="stable").head(OLDEST_SHOWN)


def prepare_empty() -> pd.DataFrame:
    """No rows, with the columns a report reads."""
    return pd.DataFrame({c: pd.Series(dtype=object) for c in REPORT_COLUMNS})


def _months(start: dt.date, end: dt.date) -> pd.PeriodIndex:
    return pd.period_range(pd.Period(start, "M"), pd.Period(end, "M"), freq="M")


def history_start(start: dt.date) -> dt.date:
    """The emerging-theme baseline needs months before the period."""
    return (pd.Period(start, "M") - EMERGING_BASELINE_MONTHS).start_time.date()


def label_of(theme, labels: dict[str, str]) -> str:
    """How a report names a theme: its taxonomy label, else the id in sentence case."""
    return labels.get(theme) or sentence_case(theme)


def prepare(frame: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Add the reported theme (as a label), the kind of feedback and the month received."""
    theme = reporting_theme(frame)
    return frame.assign(
        reported_theme=theme.map(lambda t: label_of(t, labels)),
        kind=frame["feedback_type_given"].fillna("").replace("", np.nan).fillna(frame["feedback_type"]),
        month=pd.to_datetime(frame["received_date"]).dt.to_period("M"),
    )


def _count(facts: pd.DataFrame) -> int:
    """How many complaints (or compliments) the facts stand for."""
    return int(facts["n"].sum())


def themes_section(period: pd.DataFrame, below: int) -> Section:
    complaints = period[period["kind"] != "compliment"]
    by_theme = period.groupby(["kind", "reported_theme"])["n"].sum().rename("count")
    totals = by_theme.reset_index().pivot_table(index="reported_theme", columns="kind", values="count", fill_value=0)
    totals = totals.astype(int)
    totals.index.name, totals.columns.name = "theme", None
    if _count(period):
        intro = (
            f"{_count(period)} pieces of feedback received in the period: {_count(complaints)} complaints and "
            f"{_count(period) - _count(complaints)} compliments. The theme is the analyst's where one was recorded, "
            "otherwise the model's."
        )
    else:
        intro = "No feedback received in the period (0 pieces of feedback received)."
    chart = bar_chart(
        by_theme.droplevel(0).groupby(level=0).sum().sort_values(ascending=False), below, "Number received"
    )
    return Section(
        "Complaints and compliments by theme",
        intro,
        chart,
        "Bar chart of feedback received in the period by theme; the numbers are in the table that follows.",
        [Table("By theme", totals, True)],
    )


def monthly_section(complaints: pd.DataFrame, start: dt.date, end: dt.date, below: int) -> Section:
    months = _months(start, end)
    monthly = complaints.groupby(["month", "reported_theme"])["n"].sum().unstack(fill_value=0)
    monthly = monthly.reindex(months, fill_value=0)
    monthly = monthly.astype(int)
    monthly.index, monthly.columns.name = monthly.index.astype(str), None
    monthly.index.name = "month"
    by_service = complaints.groupby(["service", "reported_theme"])["n"].sum().unstack(fill_value=0).astype(int)
    by_service.index.name, by_service.columns.name = "service", None
    chart = line_chart(monthly, below, "Complaints received")
    intro = "Monthly counts of complaints by theme, and by service for the whole period."
    if chart is None:
        intro += " No chart: " + (
            "no complaints in the period." if not _count(complaints) else f"every count is under {below}."
        )
    return Section(
        "Complaints by month and by service",
        intro,
        chart,
        "Line chart of complaints per month for each theme; the numbers are in the table that follows.",
        [Table("By month", monthly, True), Table("By service", by_service, True)],
    )


def emerging_section(all_complaints: pd.DataFrame, start: dt.date, end: dt.date, below: int) -> Section:
    history = (
        all_complaints.groupby(["month", "reported_theme"])["n"]
        .sum()
        .unstack(fill_value=0)
        .reindex(_months(history_start(start), end), fill_value=0)
    )
    emerging = emerging_themes(history, min_count=below)
    flagged = emerging[emerging["emerging"]]
    month = emerging["month"].iloc[0] if len(emerging) else str(pd.Period(end, "M"))
    table = pd.DataFrame(
        {
            f"count in {month}": emerging["count"].to_numpy(),
            "monthly mean before": emerging["baseline_mean"].to_numpy(),
            "p (adjusted)": emerging["p_adjusted"].astype(float).to_numpy(),
            "emerging": emerging["emerging"].map({True: "yes", False: "no"}).to_numpy(),
        },
        index=pd.Index(emerging["theme"], name="theme"),
    )
    return Section(
        "Emerging themes",
        f"A theme is flagged when its count in {month} is significantly above its own mean over the "
        f"{EMERGING_BASELINE_MONTHS} months before (exact conditional test for two Poisson rates, one-sided, "
        f"Bonferroni-corrected across themes, p < {EMERGING_ALPHA}). "
        + (f"{len(flagged)} theme(s) flagged." if len(flagged) else "No theme is flagged."),
        tables=[Table("Emerging themes", table, (f"count in {month}",))],
    )


def review_section(period: pd.DataFrame, oldest: pd.DataFrame) -> Section:
    queue = period[period["queue"]]
    by_theme = queue.groupby("reported_theme")["n"].sum().rename("needs review").to_frame()
    by_theme.index.name = "theme"
    oldest = pd.DataFrame(
        {
            "received": oldest["received_date"].astype(str).to_numpy(),
            "theme": oldest["reported_theme"].to_numpy(),
            "confidence": oldest["theme_confidence"].astype(float).round(2).to_numpy(),
        },
        index=pd.Index(oldest["complaint_id"], name="case reference"),
    )
    return Section(
        "Review queue",
        f"{_count(queue)} model tags in the period are not confident enough to stand without a person checking them.",
        tables=[Table("Review queue by theme", by_theme, True), Table("Oldest awaiting review", oldest)],
    )


def quality_section(quality: dict | None, labels: dict[str, str]) -> Section:
    if quality is None:
        return Section("How far to trust the model's tags", "The champion model's evaluation could not be read.")
    per_theme = quality["per_theme"]
    if len(per_theme):
        per_theme = per_theme.assign(theme=per_theme["theme"].map(lambda t: label_of(t, labels)))
        per_theme = per_theme.set_index("theme").astype(float).round(3)
    return Section(
        "How far to trust the model's tags",
        f"{quality['model']}: macro-F1 {quality['macro_f1']:.2f}, {quality['measured_on']}. F1 runs from 0 to 1; "
        "tags for themes with a low F1 need more checking.",
        tables=[Table("Model quality", per_theme, ("support",))],
    )


def acknowledgement_section(complaints: pd.DataFrame, below: int) -> Section:
    title = "Acknowledgement within 3 working days"
    recorded = int((complaints["n"] * complaints["ack_recorded"]).sum())
    by_month = figures.acknowledgement(complaints.assign(month=complaints["month"].astype(str)), "month")
    by_service = figures.acknowledgement(complaints, "service")
    counts = ("received", "date recorded", "met (3 working days)")
    if not _count(complaints):
        intro = "No complaints received in the period."
    elif not recorded:
        intro = (
            f"None of the {_count(complaints)} complaints received in the period has an acknowledgement date "
            "(export column acknowledged_date), so acknowledgement cannot be measured."
        )
    else:
        met = int(by_service.iloc[:, 2].sum())
        intro = (
            f"{met} of the {recorded} complaints with an acknowledgement date ({100 * met / recorded:.0f}%) were "
            "acknowledged within 3 working days of receipt (weekends and England and Wales bank holidays excluded)."
        )
    return Section(
        title,
        intro,
        tables=[Table("Acknowledged by month", by_month, counts), Table("Acknowledged by service", by_service, counts)],
    )


def closure_section(complaints: pd.DataFrame, target: int, below: int) -> Section:
    closed = complaints[complaints["closed"]]
    by_month = figures.closure(complaints.assign(month=complaints["month"].astype(str)), "month", target)
    by_service = figures.closure(complaints, "service", target)
    if not _count(complaints):
        intro = "No complaints received in the period."
    elif not _count(closed):
        intro = (
            f"None of the {_count(complaints)} complaints received in the period has been closed (no closed date), "
            "so times to close cannot be given yet."
        )
    else:
        overall = figures.closure(closed.assign(all="all"), "all", target).iloc[0]
        intro = (
            f"{_count(closed)} of {_count(complaints)} complaints received in the period are closed: median "
            f"{format_value(overall['median working days'])} working days from receipt to closure, 90th percentile "
            f"{format_value(overall['90th percentile'])}; {format_value(overall.iloc[3])}% within the council's target "
            f"of {target} working days and {format_value(overall['% within 6 months'])}% within 6 months (the "
            "statutory outer limit). Times for fewer than "
            f"{below} complaints are not shown."
        )
    tables = [
        Table("Time to close by month received", by_month, ("closed",)),
        Table("Time to close by service", by_service, ("closed",)),
    ]
    for table in tables:  # a median of one or two complaints would show their own dates
        small = table.frame["closed"] < below
        table.frame.loc[small, table.frame.columns[1:]] = np.nan
    return Section("Time to respond and close", intro, tables=tables)


def outcomes_section(complaints: pd.DataFrame) -> Section:
    unknown = figures.unrecognised_outcomes(complaints["outcome"], complaints["n"])
    by_theme = figures.outcomes(complaints, "reported_theme")
    by_theme.index.name = "theme"
    by_service = figures.outcomes(complaints, "service")
    words = pd.DataFrame(
        {"read as": list(figures.OUTCOME_WORDS.values())},
        index=pd.Index(list(figures.OUTCOME_WORDS), name="outcome word (normalised)"),
    )
    intro = (
        "Outcomes from the export's outcome column, read through the table of outcome words below "
        "(case, hyphens and punctuation ignored)."
    )
    if len(unknown):
        intro += f' {len(unknown)} word(s) not in the table are counted as "not recognised" and listed: add them to the table.'
    tables = [Table("Outcomes by theme", by_theme, True), Table("Outcomes by service", by_service, True)]
    if len(unknown):
        tables.append(Table("Outcome words not recognised", unknown, True))
    tables.append(Table("How outcome words are read", words))
    return Section("Outcomes", intro, tables=tables)


def comparison_section(period: pd.DataFrame, previous: pd.DataFrame, target: int) -> Section:
    table = figures.compare(figures.headline(period, target), figures.headline(previous, target))
    intro = "Each headline figure beside the same period a year earlier."
    if not _count(previous):
        intro += " The store holds no feedback received a year earlier, so there is nothing to compare with yet."
    return Section("Against the same period a year earlier", intro, tables=[Table("Headline figures", table)])


def learning_section(period: pd.DataFrame, overdue: pd.DataFrame, today: dt.date, below: int) -> Section:
    closed = period[period["has_deadline"]]
    by_service = figures.learning_actions(closed, today)
    overdue = figures.overdue_learning(overdue, today)
    status = closed.groupby(closed["learning_status"].replace({"due soon": "open"}))["n"].sum()
    status = status[status > 0].sort_values(ascending=False, kind="stable")
    if not _count(closed):
        intro = "No complaint received in the period has been closed, so no learning stage has started."
    else:
        intro = (
            f"The learning stage must be completed within {LEARNING_STAGE_WORKING_DAYS} working days of closure. "
            f"In the period: {int(status.get('completed on time', 0))} completed on time, "
            f"{int(status.get('completed late', 0))} late, {int(status.get('overdue', 0))} overdue, "
            f"{int(status.get('open', 0))} open ({int(by_service['due in next 5 working days'].sum())} due in the "
            "next 5 working days). The overdue list is for the Customer Relations Team to chase."
        )
        if int(status.get("overdue", 0)) > len(overdue):
            intro += f" It names the {len(overdue)} overdue longest."
    chart = (
        bar_chart(status.reindex(figures.LEARNING_COLUMNS, fill_value=0), below, "Complaints") if len(status) else None
    )
    return Section(
        "Learning actions",
        intro,
        chart,
        "Bar chart of learning-stage status counts; the numbers are in the table that follows.",
        [Table("Learning stage by service", by_service, True), Table("Overdue learning stages", overdue, max_rows=30)],
    )


def statutory_section(complaints: pd.DataFrame, below: int) -> Section:
    outcome = figures.outcome_of(complaints["outcome"])
    n = complaints["n"]
    statutory = pd.DataFrame(
        {
            "count": [
                _count(complaints),
                int(n[outcome.isin(figures.WELL_FOUNDED)].sum()),
                int(n[complaints["ombudsman"]].sum()),
                int(n[complaints["learning_status"].isin(["completed on time", "completed late"])].sum()),
            ]
        },
        index=pd.Index(
            [
                "Complaints received",
                "Complaints well-founded (outcome upheld or partly upheld)",
                "Complaints referred to the Ombudsman",
                "Learning actions completed",
            ],
            name="figure",
        ),
    )
    subject = complaints.groupby("reported_theme")["n"].sum().rename("count").to_frame()
    subject.index.name = "subject matter (theme)"
    return Section(
        "Annual report figures (Local Authority Social Services and NHS Complaints Regulations 2009)",
        "The figures regulation 18 asks for, for the period.",
        tables=[Table("Statutory figures", statutory), Table("Subject matter", subject, True)],
    )


def example_ids(complaints: pd.DataFrame, per_theme: int = 3) -> pd.DataFrame:
    """The most confident complaints of each theme: the examples the report shows."""
    ranked = complaints.sort_values(["theme_confidence", "complaint_id"], ascending=[False, True])
    columns = ["complaint_id", "reported_theme", "evidence", "theme_confidence"]
    return ranked.groupby("reported_theme").head(per_theme)[columns]


def examples(chosen: pd.DataFrame, texts: pd.DataFrame | None) -> dict[str, list[list[tuple[str, bool]]]]:
    """Example texts by theme, redacted again (defence in depth) and cut for highlighting."""
    if texts is None or chosen.empty:
        return {}
    merged = chosen.merge(texts, on="complaint_id", how="inner")
    merged = merged[merged["text_redacted"].fillna("") != ""]
    out = {}
    for theme, members in merged.groupby("reported_theme", sort=True):
        cleaned = redact(members["text_redacted"].tolist())
        out[str(theme)] = [highlight(t, e) for t, e in zip(cleaned, members["evidence"].fillna(""))]
    return out


def build_theme_report(data: ReportData, settings: Settings) -> ThemeReport:
    """The theme report from its digests alone (no store, no MLflow): see :func:`load_report_data`."""
    below, target = settings.suppress_below, settings.response_target_working_days
    now = data.now or digest([data.frame], data.labels, data.start, data.end, data.today)
    before = data.before or digest([data.previous], data.labels, None, None, data.today)
    history = now.facts
    period = history[history["in_period"]]
    complaints = period[period["kind"] != "compliment"]
    sections = [
        themes_section(period, below),
        comparison_section(period, before.facts, target),
        monthly_section(complaints, data.start, data.end, below),
        emerging_section(history[history["kind"] != "compliment"], data.start, data.end, below),
        acknowledgement_section(complaints, below),
        closure_section(complaints, target, below),
        outcomes_section(complaints),
        learning_section(period, now.overdue, data.today, below),
        review_section(period, now.oldest),
        quality_section(data.quality, data.labels),
        statutory_section(complaints, below),
    ]
    return ThemeReport(
        title="Complaints and compliments: theme report" + (f" for {data.service}" if data.service else ""),
        period=f"{data.start:%d %B %Y} to {data.end:%d %B %Y}",
        generated=f"{dt.datetime.now():%d %B %Y %H:%M}",
        suppress_below=below,
        sections=sections,
        examples=examples(now.chosen, data.texts),
        about=about(data, now, below),
    )


def about(data: ReportData, now: Digest, below: int) -> dict[str, str]:
    """The workbook's About sheet: period, source, suppression rule, model."""
    files, versions = sorted(now.files), sorted(now.versions)
    return {
        "Report": "Complaints and compliments: theme report" + (f" for {data.service}" if data.service else ""),
        "Period": f"{data.start.isoformat()} to {data.end.isoformat()} (complaints by date received)",
        "Source": "The results store of Learning from Feedback; exports read: " + (", ".join(files) or "none"),
        "Small numbers": f'Counts from 1 to {below - 1} are shown as the text "<{below}" in breakdowns; every other number is a number.',
        "Model": (data.quality or {}).get("model", "not available")
        + (f"; tags in the period from version(s) {', '.join(versions)}" if versions else ""),
        "Model quality": (data.quality or {}).get("measured_on", "not available"),
        "Produced": f"{dt.datetime.now():%Y-%m-%d %H:%M}",
    }


def default_period(latest: dt.date | None, today: dt.date, months: int) -> tuple[dt.date, dt.date]:
    """The last ``months`` complete months of the data: ending with the month of the latest
    complaint received, or the last month before today's if that is earlier."""
    last_complete = pd.Period(today, "M") - 1
    end_month = min(pd.Period(latest, "M"), last_complete) if latest else last_complete
    return (end_month - (months - 1)).start_time.date(), end_month.end_time.date()


def theme_labels(settings: Settings) -> dict[str, str]:
    """Theme id -> label from the taxonomy file; none (ids in sentence case) if it cannot be read."""
    from pipelines.taxonomy import Taxonomy, TaxonomyError

    try:
        return Taxonomy.from_file(settings.taxonomy_path).labels()
    except TaxonomyError:
        return {}


def load_report_data(
    engine, settings: Settings, start: dt.date, end: dt.date, service: str | None, today: dt.date
) -> ReportData:
    """Read what the theme report needs: the period's rows (and its baseline and a year earlier),
    only the columns it uses, in chunks digested as they come (memory follows the facts, not
    the rows); the champion's quality, the taxonomy labels, the examples' text."""
    labels = theme_labels(settings)
    rows = store.iter_complaints_between(engine, history_start(start), end, service, REPORT_COLUMNS, CHUNK_ROWS)
    now = digest(rows, labels, start, end, today)
    year = pd.DateOffset(years=1)
    a_year_earlier = (pd.Timestamp(start) - year).date(), (pd.Timestamp(end) - year).date()
    earlier = store.iter_complaints_between(engine, *a_year_earlier, service, REPORT_COLUMNS, CHUNK_ROWS)
    before = digest(earlier, labels, None, None, today)
    empty = prepare_empty()
    data = ReportData(
        empty, empty, start, end, today, service, labels, champion_quality(settings), now=now, before=before
    )
    data.texts = store.read_complaints(engine, now.chosen["complaint_id"].tolist(), ["complaint_id", "text_redacted"])
    return data


# --------------------------------------------------------------------------- the learning bulletin


@dataclass
class Bulletin:
    title: str
    generated: str
    since: str | None
    groups: pd.DataFrame  # one row per group, with status "new", "growing" or "recurring"
    themes: pd.DataFrame  # complaint themes this month and whether emerging
    counts: dict  # every group's points and reviews now: what the next bulletin compares with
    month: str = "this month"  # the month the complaint themes are of, e.g. "October 2025"


def representative_point(groups: pd.DataFrame) -> pd.Series:
    """Each group's representative learning point, redacted: the ``representative_point`` column
    when the grouping gives one, else the first of its ``representative_points``."""
    if (
        "representative_point" in groups
        and groups["representative_point"].fillna("").astype(str).str.strip().ne("").all()
    ):
        points = groups["representative_point"].astype(str).str.strip()
    else:
        points = groups["representative_points"].fillna("").astype(str).str.split(" | ", regex=False).str[0].str.strip()
    return pd.Series(redact(points.tolist()), index=groups.index)


def bulletin_groups(groups: pd.DataFrame, previous: dict | None) -> pd.DataFrame:
    """The groups the bulletin shows: recurring, new or grown since the last bulletin, with a
    readable label and one representative point, new first."""
    if not len(groups):
        return groups
    before = previous["groups"] if previous else {}
    groups = groups.copy()
    groups["label"] = groups["group_label"].fillna("").astype(str).map(sentence_case)
    groups["representative"] = representative_point(groups)
    was = groups["group_id"].map(lambda g: before.get(str(g), {}).get("n_points")).astype(float)
    is_new = was.isna() & (previous is not None)  # the first bulletin has nothing to compare with
    growing = was.notna() & (groups["n_points"] > was)
    groups["status"] = np.select(
        [is_new, growing], ["new", "growing"], default=np.where(groups["recurring"], "recurring", "single review")
    )
    groups["growth"] = (groups["n_points"] - was.fillna(groups["n_points"])).astype(int)
    groups = groups[groups["recurring"].astype(bool) | groups["status"].isin(["new", "growing"])]
    rank = groups["status"].map({"new": 0, "growing": 1, "recurring": 2, "single review": 3})
    return groups.assign(_rank=rank).sort_values(["_rank", "n_reviews", "group_id"], ascending=[True, False, True])


@dataclass
class BulletinData:
    """What a bulletin is built from, read from the store by :func:`load_bulletin_data`."""

    groups: pd.DataFrame  # the learning groups of the latest grouping
    previous: dict | None  # the last bulletin circulated (its groups and date), if any
    history: pd.DataFrame  # complaints by month (every month, oldest first, to end's) and reporting theme
    end: dt.date  # the bulletin's month is the month of this date


def load_bulletin_data(engine, end: dt.date) -> BulletinData:
    """The learning groups, the last bulletin and complaint counts by month up to ``end``;
    complaints are counted chunk by chunk, so memory does not follow the rows."""
    _, groups = store.read_learning(engine)
    start = history_start(end)
    columns = ["received_date", "human_theme", "analyst_theme", "theme", "feedback_type"]
    counts_by_month = []
    for frame in store.iter_complaints_between(engine, start, end, None, columns, CHUNK_ROWS):
        frame = frame[frame["feedback_type"].fillna("") != "compliment"]
        month = pd.to_datetime(frame["received_date"]).dt.to_period("M")
        counts_by_month.append(frame.groupby([month.rename("month"), reporting_theme(frame).rename("theme")]).size())
    counted = pd.concat(counts_by_month) if counts_by_month else pd.Series(dtype=int)
    history = counted.groupby(level=[0, 1]).sum().unstack(fill_value=0) if len(counted) else pd.DataFrame()
    history = history.reindex(_months(start, end), fill_value=0)
    return BulletinData(groups=groups, previous=store.last_bulletin(engine), history=history, end=end)


def build_bulletin(data: BulletinData, settings: Settings, today: dt.date | None = None) -> Bulletin:
    """Recurring learning groups, and those new or grown since the last bulletin; complaint
    themes emerging in the month of ``data.end``. Pure: no store, no tracking."""
    today = today or dt.date.today()
    groups, previous = data.groups, data.previous
    counts = {
        str(g): {"n_points": int(p), "n_reviews": int(r)}
        for g, p, r in zip(groups.get("group_id", []), groups.get("n_points", []), groups.get("n_reviews", []))
    }
    themes = emerging_themes(data.history, min_count=settings.suppress_below)
    labels = theme_labels(settings)
    themes["theme"] = themes["theme"].map(lambda t: label_of(t, labels))
    return Bulletin(
        title="Learning bulletin",
        generated=f"{today:%d %B %Y}",
        since=previous["created_at"].strftime("%d %B %Y") if previous else None,
        groups=bulletin_groups(groups, previous),
        themes=themes,
        counts=counts,
        month=f"{data.end:%B %Y}",
    )


# Characters that make Markdown emphasis, code, links, images, tables or raw HTML mid-line
# (the text never starts a line: newlines become spaces, so list and heading markers are inert).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#!|~])")


def markdown_escape(text: str) -> str:
    """Text safe to paste into Markdown: HTML special characters as entities and Markdown
    punctuation backslash-escaped, so nothing in a learning point becomes markup or a link."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\r", " ").replace("\n", " "))


# --------------------------------------------------------------------------- writing


_NUMERIC = re.compile(r"^(<?-?[\d.,]+%?|–)$")  # right-aligned in tables: counts, figures, "<5", "–"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipelines", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = markdown_escape
    env.tests["numeric"] = lambda value: bool(_NUMERIC.match(str(value)))
    return env


def write_xlsx(sheets: dict[str, pd.DataFrame], path: Path, about: dict[str, str] | None = None) -> Path:
    """A working workbook: an About sheet first, then one sheet per table with numbers stored
    as numbers (suppressed counts as the text "<N"), bold frozen headers, filters and column
    widths; formulas neutralised, so every cell is a value. Written row by row (openpyxl's
    write-only mode), so a long list (every overdue learning stage) does not fill memory."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    if about is not None:
        _write_sheet(book, "About", pd.DataFrame({"about": list(about), "": list(about.values())}), filters=False)
    for name, table in sheets.items():
        _write_sheet(book, name, table)
    book.save(path)
    return path


def _cell_value(value):
    """Numbers as numbers (whole floats as integers), text neutralised, missing as empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, (dt.date, pd.Timestamp)):
        return pd.Timestamp(value).date()
    return value


def _write_sheet(book, name: str, table: pd.DataFrame, filters: bool = True) -> None:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    sheet = book.create_sheet(name)
    text = neutralise_formulas(table.astype(object).where(table.notna(), None))
    for i, column in enumerate(text.columns, start=1):  # widths come before the rows in write-only mode
        longest = max([len(str(column))] + [len(str(v)) for v in text.iloc[:1000, i - 1].tolist()])
        sheet.column_dimensions[get_column_letter(i)].width = min(80, max(8, longest + 2))
    sheet.freeze_panes = "A2"
    if filters and len(text) and len(text.columns):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(text.columns))}{len(text) + 1}"
    header = []
    for column in text.columns:
        cell = WriteOnlyCell(sheet, value=str(column))
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    for row in text.itertuples(index=False):
        sheet.append([_cell_value(v) for v in row])


def write_theme_report(report: ThemeReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / "theme_report.html"
    html.write_text(_environment().get_template("theme_report.html.j2").render(report=report), encoding="utf-8")
    return [html, write_xlsx(report.sheets(), folder / "theme_report.xlsx", report.about)]


def write_bulletin(bulletin: Bulletin, folder: Path, engine=None) -> list[Path]:
    """Write the bulletin (HTML and Markdown) and, given the store, remember it so the next
    bulletin can say what is new and growing."""
    folder.mkdir(parents=True, exist_ok=True)
    env = _environment()
    html = folder / "learning_bulletin.html"
    md = folder / "learning_bulletin.md"
    html.write_text(env.get_template("bulletin.html.j2").render(b=bulletin), encoding="utf-8")
    md.write_text(env.get_template("bulletin.md.j2").render(b=bulletin), encoding="utf-8")
    if engine is not None:
        store.record_bulletin(engine, json.dumps(bulletin.counts))
    return [html, md]


def run_reports(
    settings: Settings,
    output: Path,
    start: dt.date | None = None,
    end: dt.date | None = None,
    service: str | None = None,
    today: dt.date | None = None,
    record_bulletin: bool = True,
    engine=None,
) -> list[Path]:
    """Both reports from the store: by default the last ``report_months`` complete months of
    the data in it. ``record_bulletin``: remember this bulletin as circulated, so the next one
    says what is new and growing since; the nightly run writes a preview and leaves that to
    ``python cli.py report``."""
    today = today or dt.date.today()
    engine = engine or store.connect(settings.store)
    if end is None:  # given only --from, the period runs to today
        end = (
            today if start else default_period(store.latest_received(engine, service), today, settings.report_months)[1]
        )
    start = start or (pd.Period(end, "M") - (settings.report_months - 1)).start_time.date()
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    data = load_report_data(engine, settings, start, end, service, today)
    paths = write_theme_report(build_theme_report(data, settings), output)
    bulletin = build_bulletin(load_bulletin_data(engine, end), settings, today)
    paths += write_bulletin(bulletin, output, engine if record_bulletin else None)
    log.info("reports written", extra={"fields": {"folder": str(output), "files": len(paths)}})
    return paths
