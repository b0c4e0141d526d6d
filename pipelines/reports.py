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

from pipelines import store
from pipelines.config import Settings
from pipelines.deadlines import due_soon_before
from pipelines.tables import neutralise_formulas
from pipelines.text import redact

log = logging.getLogger(__name__)

# Okabe-Ito: distinguishable with the common forms of colour blindness. Lines also differ by
# marker and dash, so nothing is told by colour alone.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":"]
WELL_FOUNDED = {"upheld", "partially upheld", "partly upheld", "well-founded", "well founded", "justified"}
EMERGING_BASELINE_MONTHS = 6
EMERGING_ALPHA = 0.01


# --------------------------------------------------------------------------- the numbers


def suppress(table: pd.DataFrame, below: int) -> pd.DataFrame:
    """Counts as text, with 1..below-1 shown as "<below" (0 is safe to show)."""
    values = table.to_numpy()
    shown = np.where((values > 0) & (values < below), f"<{below}", values.astype(int).astype(str))
    return pd.DataFrame(shown, index=table.index, columns=table.columns)


def reporting_theme(frame: pd.DataFrame) -> pd.Series:
    """The theme reported for each complaint: people decide, so an analyst's correction first,
    then the theme recorded in the export, and the model's only when neither exists."""
    model = frame["theme"].fillna("untagged")
    human = frame["human_theme"].fillna("").astype(str).str.strip()
    analyst = frame["analyst_theme"].fillna("").astype(str).str.strip() if "analyst_theme" in frame else human
    return analyst.where(analyst != "", human.where(human != "", model))


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
    """Macro-F1 and per-theme F1 of the current champion, from its training run's evaluation."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.config import configure_mlflow

    configure_mlflow(settings)
    try:
        version = MlflowClient().get_model_version_by_alias(settings.model_name, "champion")
        metrics = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/evaluation/metrics.json")
    except (MlflowException, OSError) as err:
        log.warning("model quality not available", extra={"fields": {"error": type(err).__name__}})
        return None
    return {
        "model": f"{settings.model_name} version {version.version}",
        "macro_f1": metrics.get("macro_f1"),
        "evaluation": metrics.get("evaluation", {}).get("method", "held-out data")
        if isinstance(metrics.get("evaluation"), dict)
        else "held-out data",
        "per_theme": pd.DataFrame(
            [
                {"theme": k, "f1": v.get("f1"), "support": v.get("support")}
                for k, v in metrics.get("per_theme", {}).items()
            ]
        ),
    }


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


def bar_chart(values: pd.Series, below: int, xlabel: str) -> str:
    """Horizontal bars with the value written at each bar; suppressed values are not drawn."""
    fig, ax = _figure(height=0.45 * len(values) + 1)
    shown = values.where(values >= below, 0)
    ax.barh(range(len(values)), shown.to_numpy(), color=PALETTE[0])
    ax.set_yticks(range(len(values)), [str(i) for i in values.index])
    ax.invert_yaxis()
    for i, (v, s) in enumerate(zip(values, shown)):
        ax.text(s, i, f" {v}" if v >= below or v == 0 else f" <{below}", va="center")
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return _svg_data_uri(fig)


def line_chart(table: pd.DataFrame, below: int, ylabel: str) -> str:
    """One line per column, each with its own marker and dash as well as colour; points under
    the suppression threshold are left out."""
    fig, ax = _figure()
    x = np.arange(len(table))
    for i, column in enumerate(table.columns):
        y = table[column].astype(float).where(table[column] >= below)
        ax.plot(
            x,
            y,
            label=str(column),
            color=PALETTE[i % len(PALETTE)],
            marker=MARKERS[i % len(MARKERS)],
            linestyle=DASHES[i % len(DASHES)],
        )
    ax.set_xticks(x, [str(i) for i in table.index], rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    ax.spines[["top", "right"]].set_visible(False)
    return _svg_data_uri(fig)


# --------------------------------------------------------------------------- the theme report


@dataclass
class Section:
    """A heading, optional chart (with alt text) and the tables beside it."""

    title: str
    intro: str = ""
    chart: str | None = None
    alt: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)


@dataclass
class ThemeReport:
    title: str
    period: str
    generated: str
    suppress_below: int
    sections: list[Section]
    examples: dict[str, list[list[tuple[str, bool]]]]

    def sheets(self) -> dict[str, pd.DataFrame]:
        """The report's tables for the workbook, one sheet each."""
        out = {}
        for section in self.sections:
            for caption, table in section.tables:
                name = re.sub(r"[\[\]:*?/\\]", " ", caption)[:31]
                out[name] = table.reset_index() if table.index.name else table
        return out


def _months(start: dt.date, end: dt.date) -> pd.PeriodIndex:
    return pd.period_range(pd.Period(start, "M"), pd.Period(end, "M"), freq="M")


def build_theme_report(
    engine,
    settings: Settings,
    start: dt.date,
    end: dt.date,
    service: str | None = None,
    today: dt.date | None = None,
) -> ThemeReport:
    today = today or dt.date.today()
    below = settings.suppress_below
    # The baseline for emerging themes needs months before the period.
    history_start = (pd.Period(start, "M") - EMERGING_BASELINE_MONTHS).start_time.date()
    frame = store.complaints_between(engine, history_start, end, service)
    frame["reported_theme"] = reporting_theme(frame)
    frame["kind"] = frame["feedback_type_given"].fillna("").replace("", np.nan).fillna(frame["feedback_type"])
    frame["month"] = pd.to_datetime(frame["received_date"]).dt.to_period("M")
    in_period = frame[(frame["received_date"] >= start) & (frame["received_date"] <= end)]
    complaints = in_period[in_period["kind"] != "compliment"]
    sections = []

    by_theme = in_period.groupby(["kind", "reported_theme"]).size().rename("count")
    totals = by_theme.reset_index().pivot_table(index="reported_theme", columns="kind", values="count", fill_value=0)
    totals.index.name = "theme"
    sections.append(
        Section(
            "Complaints and compliments by theme",
            f"{len(in_period)} pieces of feedback received in the period: "
            f"{len(complaints)} complaints and {len(in_period) - len(complaints)} compliments. The theme is the "
            "analyst's where one was recorded, otherwise the model's.",
            bar_chart(
                by_theme.droplevel(0).groupby(level=0).sum().sort_values(ascending=False), below, "Number received"
            ),
            "Bar chart of feedback received in the period by theme; the numbers are in the table that follows.",
            [("By theme", suppress(totals, below))],
        )
    )

    months = _months(start, end)
    monthly = complaints.groupby(["month", "reported_theme"]).size().unstack(fill_value=0).reindex(months, fill_value=0)
    monthly.index = monthly.index.astype(str)
    monthly.index.name = "month"
    by_service = complaints.groupby(["service", "reported_theme"]).size().unstack(fill_value=0)
    by_service.index.name = "service"
    sections.append(
        Section(
            "Complaints by month and by service",
            "Monthly counts of complaints by theme, and by service for the whole period.",
            line_chart(monthly, below, "Complaints received") if len(monthly.columns) else None,
            "Line chart of complaints per month for each theme; the numbers are in the table that follows.",
            [("By month", suppress(monthly, below)), ("By service", suppress(by_service, below))],
        )
    )

    all_complaints = frame[frame["kind"] != "compliment"]
    history = (
        all_complaints.groupby(["month", "reported_theme"])
        .size()
        .unstack(fill_value=0)
        .reindex(_months(history_start, end), fill_value=0)
    )
    emerging = emerging_themes(history, min_count=below)
    flagged = emerging[emerging["emerging"]]
    sections.append(
        Section(
            "Emerging themes",
            f"A theme is flagged when its count in {emerging['month'].iloc[0] if len(emerging) else 'the last month'} is "
            f"significantly above its own mean over the {EMERGING_BASELINE_MONTHS} months before (exact conditional "
            f"test for two Poisson rates, one-sided, Bonferroni-corrected across themes, p < {EMERGING_ALPHA}). "
            + (f"{len(flagged)} theme(s) flagged." if len(flagged) else "No theme is flagged."),
            tables=[
                (
                    "Emerging themes",
                    emerging.assign(
                        count=suppress(emerging[["count"]], below)["count"],
                        p_value=emerging["p_value"].map(lambda p: f"{p:.2g}"),
                        p_adjusted=emerging["p_adjusted"].map(lambda p: f"{p:.2g}"),
                        emerging=emerging["emerging"].map({True: "yes", False: "no"}),
                    ).set_index("theme"),
                )
            ],
        )
    )

    queue = in_period[
        in_period["needs_review"].fillna(False).astype(bool) & (in_period["human_theme"].fillna("") == "")
    ]
    queue_by_theme = queue.groupby("theme").size().rename("needs review").to_frame()
    oldest = queue.sort_values("received_date").head(20)[["complaint_id", "received_date", "theme", "theme_confidence"]]
    sections.append(
        Section(
            "Review queue",
            f"{len(queue)} model tags in the period are not confident enough to stand without a person checking them.",
            tables=[
                ("Review queue by theme", suppress(queue_by_theme, below)),
                (
                    "Oldest awaiting review",
                    oldest.assign(theme_confidence=oldest["theme_confidence"].round(2)).set_index("complaint_id"),
                ),
            ],
        )
    )

    quality = champion_quality(settings)
    if quality is not None:
        per_theme = quality["per_theme"]
        sections.append(
            Section(
                "How far to trust the model's tags",
                f"{quality['model']}: macro-F1 {quality['macro_f1']:.2f} on held-out data. F1 runs from 0 to 1; "
                "tags for themes with a low F1 need more checking.",
                tables=[("Model quality", per_theme.round(3).set_index("theme") if len(per_theme) else per_theme)],
            )
        )

    closed = in_period[in_period["learning_deadline"].notna()]
    compliance = closed.groupby(["service", "learning_status"]).size().unstack(fill_value=0)
    compliance.index.name = "service"
    due_next = closed[
        closed["learning_completed_date"].isna()
        & (closed["learning_deadline"] >= today)
        & (closed["learning_deadline"] < due_soon_before(today))
    ]
    compliance["due in next 5 working days"] = (
        due_next.groupby("service").size().reindex(compliance.index, fill_value=0)
    )
    status_totals = closed["learning_status"].value_counts()
    sections.append(
        Section(
            "Learning stage compliance",
            f"The learning stage must be completed within 20 working days of closure. In the period: "
            f"{int(status_totals.get('completed on time', 0))} completed on time, "
            f"{int(status_totals.get('completed late', 0))} late, {int(status_totals.get('overdue', 0))} overdue, "
            f"{len(due_next)} due in the next 5 working days.",
            bar_chart(status_totals.sort_index(), below, "Complaints") if len(status_totals) else None,
            "Bar chart of learning-stage status counts; the numbers are in the table that follows.",
            [("Learning stage by service", suppress(compliance, below))],
        )
    )

    outcome = complaints["outcome"].fillna("").str.strip().str.lower()
    ombudsman = complaints["ombudsman_referral"].fillna("").str.strip().str.lower().isin({"yes", "y", "true", "1"})
    statutory = pd.DataFrame(
        {
            "figure": [
                "Complaints received",
                "Complaints well-founded (outcome upheld or partly upheld)",
                "Complaints referred to the Ombudsman",
                "Learning actions completed",
            ],
            "count": [
                len(complaints),
                int(outcome.isin(WELL_FOUNDED).sum()),
                int(ombudsman.sum()),
                int(complaints["learning_status"].isin(["completed on time", "completed late"]).sum()),
            ],
        }
    ).set_index("figure")
    subject = complaints.groupby("reported_theme").size().rename("count").to_frame()
    subject.index.name = "subject matter (theme)"
    sections.append(
        Section(
            "Annual report figures (Local Authority Social Services and NHS Complaints Regulations 2009)",
            "The figures regulation 18 asks for, for the period.",
            tables=[("Statutory figures", statutory), ("Subject matter", suppress(subject, below))],
        )
    )

    examples = {}
    for theme, members in complaints[complaints["text_redacted"].fillna("") != ""].groupby("reported_theme"):
        chosen = members.sort_values(["theme_confidence", "complaint_id"], ascending=[False, True]).head(3)
        texts = redact(chosen["text_redacted"].tolist())  # again: defence in depth
        examples[str(theme)] = [highlight(t, e) for t, e in zip(texts, chosen["evidence"].fillna(""))]

    return ThemeReport(
        title="Complaints and compliments: theme report" + (f" for {service}" if service else ""),
        period=f"{start:%d %B %Y} to {end:%d %B %Y}",
        generated=f"{dt.datetime.now():%d %B %Y %H:%M}",
        suppress_below=below,
        sections=sections,
        examples=examples,
    )


# --------------------------------------------------------------------------- the learning bulletin


@dataclass
class Bulletin:
    title: str
    generated: str
    since: str | None
    groups: pd.DataFrame  # one row per group, with status "new", "growing" or "recurring"
    themes: pd.DataFrame  # complaint themes this month and whether emerging
    counts: dict  # every group's points and reviews now: what the next bulletin compares with


def build_bulletin(engine, settings: Settings, today: dt.date | None = None) -> Bulletin:
    """Recurring learning groups, and those new or grown since the last bulletin."""
    today = today or dt.date.today()
    _, groups = store.read_learning(engine)
    counts = {
        str(g): {"n_points": int(p), "n_reviews": int(r)}
        for g, p, r in zip(groups.get("group_id", []), groups.get("n_points", []), groups.get("n_reviews", []))
    }
    previous = store.last_bulletin(engine)
    before = previous["groups"] if previous else {}
    if len(groups):
        groups = groups.copy()
        groups["representative"] = [
            redact([p.strip() for p in str(r).split(" | ") if p.strip()]) for r in groups["representative_points"]
        ]
        was = groups["group_id"].map(lambda g: before.get(str(g), {}).get("n_points")).astype(float)
        is_new = was.isna() & (previous is not None)  # the first bulletin has nothing to compare with
        growing = was.notna() & (groups["n_points"] > was)
        groups["status"] = np.select(
            [is_new, growing], ["new", "growing"], default=np.where(groups["recurring"], "recurring", "single review")
        )
        groups["growth"] = (groups["n_points"] - was.fillna(groups["n_points"])).astype(int)
        groups = groups[groups["recurring"].astype(bool) | groups["status"].isin(["new", "growing"])]
        rank = groups["status"].map({"new": 0, "growing": 1, "recurring": 2, "single review": 3})
        groups = groups.assign(_rank=rank).sort_values(
            ["_rank", "n_reviews", "group_id"], ascending=[True, False, True]
        )
    start = (pd.Period(today, "M") - EMERGING_BASELINE_MONTHS).start_time.date()
    frame = store.complaints_between(engine, start, today, None)
    frame = frame[frame["feedback_type"].fillna("") != "compliment"]
    history = (
        frame.assign(theme=reporting_theme(frame), month=pd.to_datetime(frame["received_date"]).dt.to_period("M"))
        .groupby(["month", "theme"])
        .size()
        .unstack(fill_value=0)
        .reindex(_months(start, today), fill_value=0)
    )
    themes = emerging_themes(history, min_count=settings.suppress_below)
    return Bulletin(
        title="Learning bulletin",
        generated=f"{today:%d %B %Y}",
        since=previous["created_at"].strftime("%d %B %Y") if previous else None,
        groups=groups,
        themes=themes,
        counts=counts,
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


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pipelines", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = markdown_escape
    return env


def write_xlsx(sheets: dict[str, pd.DataFrame], path: Path) -> Path:
    """A workbook of tables with formulas neutralised and every cell written as a value."""
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, table in sheets.items():
            neutralise_formulas(table.astype(object).where(table.notna(), "")).to_excel(
                writer, sheet_name=name, index=False
            )
    return path


def write_theme_report(report: ThemeReport, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / "theme_report.html"
    html.write_text(_environment().get_template("theme_report.html.j2").render(report=report), encoding="utf-8")
    return [html, write_xlsx(report.sheets(), folder / "theme_report.xlsx")]


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
    """Both reports from the store: by default the 12 months to today. ``record_bulletin``:
    remember this bulletin as circulated, so the next one says what is new and growing since;
    the nightly run writes a preview and leaves that to ``python cli.py report``."""
    today = today or dt.date.today()
    end = end or today
    start = start or (pd.Period(end, "M") - 11).start_time.date()
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    engine = engine or store.connect(settings.store)
    paths = write_theme_report(build_theme_report(engine, settings, start, end, service, today), output)
    paths += write_bulletin(build_bulletin(engine, settings, today), output, engine if record_bulletin else None)
    log.info("reports written", extra={"fields": {"folder": str(output), "files": len(paths)}})
    return paths
