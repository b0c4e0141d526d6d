"""Reports: emerging-theme detection on series with a known answer, small-number suppression,
hostile and identifying text kept out of every output, the bulletin's new and growing groups,
and the theme report in a real browser (offline, no console errors, alt text, tables)."""

import datetime as dt
import os
import zipfile

import numpy as np
import pandas as pd
import pytest

from pipelines import store
from pipelines.config import PROJECT_ROOT
from pipelines.reports import emerging_themes, highlight, markdown_escape
from tests.conftest import run_cli

ARTIFACTS = PROJECT_ROOT / "test-artifacts"


def _series(rng, months=12, themes=("a", "b", "c", "d"), rate=20):
    index = pd.period_range("2025-01", periods=months, freq="M").astype(str)
    return pd.DataFrame(rng.poisson(rate, (months, len(themes))), index=index, columns=list(themes))


def test_a_theme_doubling_in_one_month_is_flagged_and_ordinary_noise_is_not():
    doubled, noise_flags = 0, 0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        series = _series(rng)
        noise_flags += int(emerging_themes(series)["emerging"].sum())
        series.iloc[-1, 0] = round(2 * series.iloc[-7:-1, 0].mean())  # theme "a" doubles in the last month
        result = emerging_themes(series).set_index("theme")
        doubled += int(result.loc["a", "emerging"])
        noise_flags += int(result.drop(index="a")["emerging"].sum())
    assert doubled == 50, doubled
    # 350 themes tested on noise alone; at 1% per series of 4 themes, about 0.9 false flags are expected.
    assert noise_flags <= 3, noise_flags


def test_emerging_uses_the_themes_own_baseline_not_the_others():
    series = pd.DataFrame({"busy": [100] * 7, "quiet": [2, 1, 3, 2, 2, 1, 9]}, index=[f"m{i}" for i in range(7)])
    result = emerging_themes(series).set_index("theme")
    assert result.loc["quiet", "emerging"] and not result.loc["busy", "emerging"]
    assert result.loc["quiet", "baseline_mean"] == pytest.approx(11 / 6, abs=0.01)


def test_evidence_is_found_whatever_its_case_and_spacing():
    pieces = highlight("Nobody  Called me back about the care plan.", "called; care plan")
    assert [p for p, marked in pieces if marked] == ["Called", "care plan"]
    assert "".join(p for p, _ in pieces) == "Nobody  Called me back about the care plan."


def test_markdown_escape_leaves_no_markup():
    text = markdown_escape("<img src=x onerror=alert(1)> [click](http://evil.example) **bold** `code`\n# heading")
    assert "<" not in text and "[click]" not in text and "**" not in text and "\n" not in text


HOSTILE = [
    "<script>alert('x')</script> The carer never came. Mrs Smithers-Jones was not told. NHS 943 476 5919.",
    '=HYPERLINK("http://evil.example","click") Nobody phoned me back; email me at victim.person@example.com',
    "+SUM(1,1) The social worker did not return my calls about the assessment; my number is 07700 900987.",
    "@cmd The care package was cancelled without telling us. Mr Oddname Zebedee complained twice.",
    "-2+3 The reablement visits were late every day and nobody explained why.",
    "The assessment was never done <b onmouseover=alert(1)>really</b> and the review was missed.",
]
IDENTIFIERS = [
    "Smithers",
    "Jones",
    "943 476 5919",
    "9434765919",
    "victim.person@example.com",
    "07700 900987",
    "Zebedee",
]


@pytest.fixture(scope="module")
def hostile_reports(council_model, state_dir, tmp_path_factory):
    """A nightly run over hostile complaints and reviews, then its reports."""
    root = tmp_path_factory.mktemp("hostile")
    drop, reviews = root / "drop", root / "reviews"
    drop.mkdir()
    reviews.mkdir()
    # In the last complete month: the default report period ends there.
    first = (pd.Period(dt.date.today(), "M") - 1).start_time.date()
    rows = []
    for i in range(30):
        received = first + dt.timedelta(days=i % 28)
        rows.append(
            {
                "complaint_id": f"H-{i}",
                "received_date": received.isoformat(),
                "closed_date": (received + dt.timedelta(days=2)).isoformat(),
                "service": '=cmd|" /C calc"!A0' if i % 2 else "Community Team",
                "text": HOSTILE[i % len(HOSTILE)],
                "outcome": "Upheld" if i % 3 == 0 else "Not upheld",
                "ombudsman_referral": "yes" if i % 10 == 0 else "no",
                "feedback_type": "complaint",
            }
        )
    pd.DataFrame(rows).to_csv(drop / "export.csv", index=False)
    for n in range(3):
        (reviews / f"SIR-{n}.md").write_text(
            "# Review\n\n## Learning\n"
            f"1. Duty triage under high demand failed Mrs Smithers-Jones <script>alert({n})</script> (NHS 943 476 5919).\n"
            '2. Duty rota cover and escalation were unclear =HYPERLINK("http://evil.example") victim.person@example.com.\n'
        )
    env = {
        "LFF_DROP_FOLDER": str(drop),
        "LFF_REVIEWS_SOURCE": str(reviews),
        "LFF_STORE_URL": f"sqlite:///{root / 'store.db'}",
        "LFF_OUTPUT_FOLDER": str(root / "out"),
        "LFF_N_JOBS": "1",
    }
    result = run_cli("--quiet", "nightly", env=env, state_dir=state_dir)
    assert result.returncode == 0, result.stderr
    return {"folder": root / "out" / "reports", "env": env, "root": root}


def test_hostile_text_and_identifiers_reach_no_output_unescaped_or_unredacted(hostile_reports):
    folder = hostile_reports["folder"]
    html = (folder / "theme_report.html").read_text()
    bulletin_html = (folder / "learning_bulletin.html").read_text()
    markdown = (folder / "learning_bulletin.md").read_text()
    with zipfile.ZipFile(folder / "theme_report.xlsx") as book:
        xlsx = "".join(book.read(n).decode("utf-8", "replace") for n in book.namelist() if n.endswith(".xml"))
    for name, text in {"html": html, "bulletin": bulletin_html, "markdown": markdown, "xlsx": xlsx}.items():
        for identifier in IDENTIFIERS:
            assert identifier not in text, (name, identifier)
        assert "<script>" not in text and "<b onmouseover" not in text, name
    assert "&lt;script&gt;" in html  # the text is there, escaped, not dropped
    assert "measured on NHS Friends and Family Test feedback mapped to your themes (stratified" in html
    assert "_of_" not in html and "_of_" not in xlsx  # themes by label ("Quality of service"), not by id
    assert "&lt;script&gt;" in bulletin_html and "Duty" in markdown
    # The example complaints show the hostile formulas as text.
    assert "=HYPERLINK" in html
    import openpyxl

    book = openpyxl.load_workbook(folder / "theme_report.xlsx")
    cells = [c for sheet in book.worksheets for row in sheet.iter_rows() for c in row if c.value is not None]
    assert any("calc" in str(c.value) for c in cells)  # the hostile service name is there...
    for cell in cells:
        assert cell.data_type != "f", cell.coordinate
        if isinstance(cell.value, str):
            assert not cell.value.startswith(("=", "+", "-", "@", "\t", "\r")), cell.value  # ...neutralised


def test_statutory_figures_count_well_founded_and_ombudsman_referrals(hostile_reports):
    import openpyxl

    book = openpyxl.load_workbook(hostile_reports["folder"] / "theme_report.xlsx")
    rows = {r[0]: r[1] for r in book["Statutory figures"].iter_rows(min_row=2, values_only=True)}
    assert rows["Complaints received"] == 30
    assert rows["Complaints well-founded (outcome upheld or partly upheld)"] == 10  # every third is upheld
    assert rows["Complaints referred to the Ombudsman"] == 3


def test_the_workbook_is_a_working_file(hostile_reports):
    import openpyxl

    book = openpyxl.load_workbook(hostile_reports["folder"] / "theme_report.xlsx")
    assert book.sheetnames[0] == "About"
    about = {r[0]: r[1] for r in book["About"].iter_rows(min_row=2, values_only=True)}
    assert "<5" in about["Small numbers"] and "export.csv" in about["Source"] and "version" in about["Model"]
    # The last 12 complete months: to the end of last month, where the complaints are.
    assert about["Period"].startswith(str((pd.Period(dt.date.today(), "M") - 12).start_time.date()))
    for sheet in book.worksheets[1:]:
        assert sheet.freeze_panes == "A2" and all(c.font.b for c in sheet[1]), sheet.title
        assert sheet.auto_filter.ref or sheet.max_row == 1, sheet.title
        assert sheet.column_dimensions["A"].width >= 8
    by_service = book["By service"]
    header = [c.value for c in by_service[1]]
    values = [c.value for row in by_service.iter_rows(min_row=2) for c in row[1:]]
    assert header[0] == "service" and values
    # 15 complaints per service, spread over themes: counts are numbers, small ones the text "<5".
    assert all(isinstance(v, int) or v == "<5" for v in values), values
    received = {r[0]: r[1] for r in book["Headline figures"].iter_rows(min_row=2, values_only=True)}
    assert received["Complaints received"] == 30 and isinstance(received["Complaints received"], int)


def test_the_bulletin_says_which_groups_are_new_and_growing(tmp_path, settings):
    from pipelines.reports import build_bulletin, load_bulletin_data, write_bulletin

    engine = store.connect(f"sqlite:///{tmp_path / 's.db'}")

    def groups(rows):
        return pd.DataFrame(
            [
                {
                    "group_id": g,
                    "group_label": label,
                    "n_points": n,
                    "n_reviews": r,
                    "teams": "North",
                    "first_seen": "2025-01-01",
                    "last_seen": "2025-06-01",
                    "recurring": r >= 2,
                    "representative_points": f"{label} point one | {label} point two",
                }
                for g, label, n, r in rows
            ]
        )

    points = pd.DataFrame(
        columns=["report_id", "position", "section", "point_text", "group_id", "group_label", "date", "team", "marker"]
    )
    store.write_learning(engine, "run1", "f1", points, groups([(0, "duty triage", 4, 3), (1, "discharge", 2, 2)]))
    first = build_bulletin(load_bulletin_data(engine, dt.date.today()), settings)
    assert set(first.groups["status"]) == {"recurring"}  # nothing to compare with yet
    write_bulletin(first, tmp_path / "b1", engine)
    store.write_learning(
        engine,
        "run2",
        "f2",
        points,
        groups([(0, "duty triage", 6, 4), (1, "discharge", 2, 2), (2, "mental health", 2, 2)]),
    )
    second = build_bulletin(load_bulletin_data(engine, dt.date.today()), settings).groups.set_index("group_label")
    assert second.loc["mental health", "status"] == "new"
    assert second.loc["duty triage", "status"] == "growing" and second.loc["duty triage", "growth"] == 2
    assert second.loc["discharge", "status"] == "recurring"
    assert second.index[0] == "mental health"  # new first
    # One representative point per group, under its readable label; and when it was last circulated.
    assert second.loc["duty triage", "representative"] == "duty triage point one"
    assert second.loc["duty triage", "label"] == "Duty triage"
    assert "Not circulated before" in (tmp_path / "b1" / "learning_bulletin.md").read_text()
    write_bulletin(build_bulletin(load_bulletin_data(engine, dt.date.today()), settings), tmp_path / "b2")
    html = (tmp_path / "b2" / "learning_bulletin.html").read_text()
    assert f"Last circulated: {dt.date.today():%d %B %Y}" in html and ">Duty triage (growing" in html
    assert "duty triage point two" not in html


def test_the_representative_point_column_wins_over_the_list_when_the_grouping_gives_it():
    from pipelines.reports import representative_point

    groups = pd.DataFrame({"representative_points": ["first | second"], "representative_point": ["chosen"]})
    assert representative_point(groups).tolist() == ["chosen"]
    assert representative_point(groups.drop(columns="representative_point")).tolist() == ["first"]


def test_report_cli_contract(hostile_reports, state_dir, tmp_path):
    bad = run_cli(
        "report", "--from", "2025-13-01", "--output", str(tmp_path), env=hostile_reports["env"], state_dir=state_dir
    )
    assert bad.returncode == 2 and "--from '2025-13-01' is not a date" in bad.stderr
    assert "Example: python cli.py report" in run_cli("report", "--help").stdout
    engine = store.connect(hostile_reports["env"]["LFF_STORE_URL"])
    assert store.last_bulletin(engine) is None  # the nightly run's bulletin is a preview
    ok = run_cli(
        "report",
        "--service",
        "Community Team",
        "--output",
        str(tmp_path / "r"),
        env=hostile_reports["env"],
        state_dir=state_dir,
    )
    assert ok.returncode == 0, ok.stderr
    html = (tmp_path / "r" / "theme_report.html").read_text()
    assert "for Community Team" in html and "calc" not in html
    assert store.last_bulletin(engine) is not None  # circulated: the next bulletin compares with it


def test_the_theme_report_works_offline_in_a_real_browser(hostile_reports):
    from playwright.sync_api import sync_playwright

    page_path = hostile_reports["folder"] / "theme_report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    requests, console_errors, page_errors = [], [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ.get("LFF_CHROMIUM", "/usr/bin/chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load")
            page.screenshot(path=str(ARTIFACTS / "theme_report.png"), full_page=True)
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.alt, e.naturalWidth])")
            charts_with_tables = page.eval_on_selector_all(
                "img", "els => els.map(e => e.closest('.figure').querySelectorAll('table').length)"
            )
            headings = page.eval_on_selector_all("h1, h2, h3", "els => els.map(e => Number(e.tagName[1]))")
            unheaded = page.eval_on_selector_all("table", "els => els.filter(t => !t.querySelector('thead th')).length")
            # 200% zoom on a 1280-pixel screen is a 640-pixel-wide page: nothing may need sideways scrolling.
            page.set_viewport_size({"width": 640, "height": 900})
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            page.screenshot(path=str(ARTIFACTS / "theme_report_200pct.png"), full_page=True)
            wide_sections = page.eval_on_selector_all(
                "section",
                "els => els.filter(s => s.scrollWidth > s.clientWidth).map(s => s.id || s.querySelector('h2,h3').textContent)",
            )
            # Every table fully visible: not clipped by its box, and inside the window.
            clipped = page.eval_on_selector_all(
                "table",
                """els => els.filter(t => {
                    const wrap = t.parentElement, r = t.getBoundingClientRect();
                    return wrap.scrollWidth > wrap.clientWidth || r.right > window.innerWidth || r.left < 0;
                }).map(t => t.caption ? t.caption.textContent : '?')""",
            )
            for i, section in enumerate(page.query_selector_all("main > section")):
                section.screenshot(path=str(ARTIFACTS / f"theme_report_640_section{i + 1:02d}.png"))
            charts = page.eval_on_selector_all("img", "els => els.map(e => e.src)")
            page.emulate_media(media="print")
            print_overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        finally:
            browser.close()
    outside = [u for u in requests if not (u.startswith("data:") or u == page_path.as_uri())]
    assert outside == [], outside
    assert console_errors == [] and page_errors == [], (console_errors, page_errors)
    assert len(images) >= 3 and all(alt.strip() and width > 0 for alt, width in images), images
    assert all(n >= 1 for n in charts_with_tables)
    assert headings[0] == 1 and all(b - a <= 1 for a, b in zip(headings, headings[1:])), headings
    assert unheaded == 0 and overflow <= 0, overflow
    assert wide_sections == [] and clipped == [] and print_overflow <= 0, (wide_sections, clipped, print_overflow)
    for chart in charts:  # count axes start at 0: no tick label is negative (matplotlib writes U+2212)
        svg = __import__("base64").b64decode(chart.split(",", 1)[1]).decode("utf-8")
        ticks = __import__("re").findall(r"<text[^>]*>([^<]*)</text>", svg)
        assert ticks and not any(t.strip().startswith(("\u2212", "-")) for t in ticks), ticks
    assert page_path.as_uri() in requests
    assert (ARTIFACTS / "theme_report.png").stat().st_size > 10_000


def test_reports_on_an_empty_store_say_there_is_nothing_rather_than_fail(tmp_path, settings):
    from pipelines.reports import run_reports

    empty = settings.model_copy(update={"store_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    paths = run_reports(empty, tmp_path / "out", today=dt.date(2026, 11, 26))
    html = (tmp_path / "out" / "theme_report.html").read_text()
    assert len(paths) == 4 and "0 pieces of feedback received" in html and "No complaints in the period." in html
    assert "No recurring, new or growing learning groups." in (tmp_path / "out" / "learning_bulletin.md").read_text()


# --------------------------------------------------------------------------- the figures, by hand

from pipelines import figures  # noqa: E402
from pipelines.reports import (  # noqa: E402
    ReportData,
    Table,
    build_theme_report,
    default_period,
)


def _complaints(rows: list[dict]) -> pd.DataFrame:
    """A small made-up frame shaped as the report runner reads it from the store."""
    from pipelines.deadlines import acknowledgement_deadline, learning_stage

    base = {
        "source_file": "made-up.csv",
        "closed_date": None,
        "acknowledged_date": None,
        "service": "North",
        "outcome": "",
        "ombudsman_referral": "no",
        "human_theme": None,
        "feedback_type_given": "complaint",
        "learning_completed_date": None,
        "analyst_theme": None,
        "theme": "communication",
        "theme_confidence": 0.9,
        "needs_review": False,
        "evidence": "",
        "feedback_type": "complaint",
        "model_version": "1",
    }
    frame = pd.DataFrame([{**base, "complaint_id": f"C-{i}", **r} for i, r in enumerate(rows)])
    for column in ("received_date", "closed_date", "acknowledged_date", "learning_completed_date"):
        frame[column] = [dt.date.fromisoformat(v) if isinstance(v, str) and v else None for v in frame[column]]
    stage = learning_stage(frame["closed_date"], frame["learning_completed_date"], dt.date(2025, 6, 2))
    frame["learning_deadline"] = stage["learning_deadline"].to_numpy()
    frame["learning_status"] = stage["learning_status"].to_numpy()
    frame["acknowledgement_deadline"] = acknowledgement_deadline(frame["received_date"]).to_numpy()
    return frame


def test_acknowledgement_counts_working_days_across_the_easter_bank_holidays():
    # Received Thursday 17 April 2025: Good Friday (18th) and Easter Monday (21st) are not working
    # days, so the third working day is Thursday 24th (Tuesday 22nd if holidays were ignored).
    frame = _complaints(
        [
            {"received_date": "2025-04-17", "acknowledged_date": "2025-04-24"},  # met (only with holidays)
            {"received_date": "2025-04-17", "acknowledged_date": "2025-04-25"},  # missed
            {"received_date": "2025-04-17"},  # no acknowledgement date: not counted either way
            {"received_date": "2025-05-01", "acknowledged_date": "2025-05-02", "service": "South"},  # met
        ]
    ).assign(month=lambda f: pd.to_datetime(f["received_date"]).dt.to_period("M").astype(str))
    by_service = figures.acknowledgement(frame, "service")
    assert by_service.loc["North"].tolist() == [3, 2, 1, 50.0]
    assert by_service.loc["South"].tolist() == [1, 1, 1, 100.0]
    assert figures.acknowledgement(frame, "month").loc["2025-04", "% met"] == 50.0


def test_closure_times_median_90th_percentile_and_targets_by_hand():
    # Received Monday 3 March 2025; working days to each closure, counted on a calendar:
    # 4 Mar = 1, 10 Mar = 5, 31 Mar = 20, 1 Apr = 21, 2 Oct = 148 (five bank holidays between).
    closed = ["2025-03-04", "2025-03-10", "2025-03-31", "2025-04-01", "2025-10-02"]
    frame = _complaints([{"received_date": "2025-03-03", "closed_date": c} for c in closed])
    table = figures.closure(frame, "service", target_days=20).loc["North"]
    assert table["closed"] == 5 and table["median working days"] == 20
    assert table["90th percentile"] == pytest.approx(21 + 0.6 * (148 - 21), abs=0.05)  # 97.2
    assert table["% within 20 working days"] == 60.0  # 1, 5 and 20 days
    assert table["% within 6 months"] == 80.0  # 2 October is after 3 September


def test_outcome_words_are_mapped_and_unknown_words_listed_not_dropped():
    words = ["Upheld", "Partially upheld", "not-upheld", "NOT UPHELD", "Withdrawn", "Resolved locally", ""]
    frame = _complaints([{"received_date": "2025-03-03", "outcome": w} for w in words])
    table = figures.outcomes(frame, "service").loc["North"]
    assert table.to_dict() == {
        "upheld": 1,
        "partly upheld": 1,
        "not upheld": 2,
        "withdrawn": 1,
        "not recognised": 1,
        "no outcome recorded": 1,
    }
    assert table.sum() == len(words)  # nothing dropped
    assert figures.unrecognised_outcomes(frame["outcome"])["complaints"].to_dict() == {"Resolved locally": 1}


def test_learning_actions_and_the_overdue_list():
    today = dt.date(2025, 6, 2)  # learning deadlines: 20 working days after closure
    frame = _complaints(
        [
            {"received_date": "2025-03-03", "closed_date": "2025-03-31", "learning_completed_date": "2025-04-10"},
            {"received_date": "2025-03-03", "closed_date": "2025-03-31", "learning_completed_date": "2025-05-30"},
            {"received_date": "2025-03-03", "closed_date": "2025-03-31"},  # due 30 April: overdue
            {"received_date": "2025-03-03", "closed_date": "2025-05-30", "service": "South"},  # open
            {"received_date": "2025-03-03"},  # not closed: no learning stage yet
        ]
    )
    closed = frame[frame["learning_deadline"].notna()]
    table = figures.learning_actions(closed, today)
    assert table.loc["North"].tolist() == [1, 1, 1, 0, 0]
    assert table.loc["South"].tolist() == [0, 0, 0, 1, 0]
    overdue = figures.overdue_learning(closed, today)
    # Due Wednesday 30 April (20 working days after 31 March, Good Friday and Easter Monday
    # excluded); 2 June is 21 working days later (1 May to 2 June, less the 5 and 26 May holidays).
    assert overdue.index.tolist() == ["C-2"] and overdue.loc["C-2", "due date"] == "2025-04-30"
    assert overdue.loc["C-2", "working days overdue"] == 21


def test_headline_figures_beside_the_same_period_a_year_earlier(settings):
    now = _complaints(
        [{"received_date": "2025-03-03", "outcome": "upheld" if i < 3 else "not upheld"} for i in range(6)]
        + [{"received_date": "2025-03-04", "feedback_type_given": "compliment"}]
    )
    before = _complaints([{"received_date": "2024-03-04", "outcome": "upheld"} for _ in range(4)])
    report = build_theme_report(
        ReportData(now, before, dt.date(2025, 1, 1), dt.date(2025, 12, 31), dt.date(2026, 1, 5)), settings
    )
    table = next(t.frame for s in report.sections for t in s.tables if t.caption == "Headline figures")
    assert table.loc["Complaints received"].tolist() == [6, 4, 2]
    assert table.loc["Compliments received"].tolist() == [1, 0, 1]
    assert table.loc["% upheld or partly upheld (of those decided)"].tolist() == [50.0, 100.0, -50.0]
    html_cells = Table("t", table).shown(5)
    assert html_cells.loc["Complaints received", "this period"] == "6"  # a count, not "6.0"


def test_small_counts_are_suppressed_in_page_and_workbook_but_stay_numbers_otherwise():
    table = Table("t", pd.DataFrame({"a": [0, 1, 4, 5, 17], "share": [0.0, 12.5, 50.0, 1.0, 3.0]}), ("a",))
    cells = table.suppressed(5)
    assert cells["a"].tolist() == [0, "<5", "<5", 5, 17]  # 0 is safe to show; numbers stay numbers
    assert cells["share"].tolist() == [0.0, 12.5, 50.0, 1.0, 3.0]  # not a count: never suppressed
    assert table.shown(5)["a"].tolist() == ["0", "<5", "<5", "5", "17"]


def test_the_default_period_is_the_last_complete_months_of_the_data():
    assert default_period(dt.date(2025, 12, 15), dt.date(2026, 11, 26), 12) == (
        dt.date(2025, 1, 1),
        dt.date(2025, 12, 31),
    )
    # Data up to this month: this month is not complete yet.
    assert default_period(dt.date(2026, 11, 20), dt.date(2026, 11, 26), 12) == (
        dt.date(2025, 11, 1),
        dt.date(2026, 10, 31),
    )
    assert default_period(None, dt.date(2026, 11, 26), 3) == (dt.date(2026, 8, 1), dt.date(2026, 10, 31))


def test_wide_tables_are_split_to_fit_a_narrow_page():
    from pipelines.reports import MAX_TABLE_COLUMNS

    n = 2 * MAX_TABLE_COLUMNS + 1
    wide = pd.DataFrame(np.arange(2 * n).reshape(2, n) + 5, index=["a", "b"], columns=[f"c{i}" for i in range(n)])
    pieces = Table("By month", wide, True).pieces(5)
    assert [c for c, _ in pieces] == ["By month (1 of 3)", "By month (2 of 3)", "By month (3 of 3)"]
    assert [len(f.columns) for _, f in pieces] == [MAX_TABLE_COLUMNS, MAX_TABLE_COLUMNS, 1]
    assert pd.concat([f for _, f in pieces], axis=1).columns.tolist() == wide.columns.tolist()  # nothing lost
    long = Table("Overdue", pd.DataFrame({"days": range(40)}), max_rows=30).pieces(5)
    assert long[0][0] == "Overdue: the first 30 of 40 (all in the workbook)" and len(long[0][1]) == 30


# --------------------------------------------------------------------------- nothing closed


def _nightly_on(export: pd.DataFrame, root, state_dir) -> tuple:
    drop = root / "drop"
    drop.mkdir(parents=True)
    export.to_csv(drop / "export.csv", index=False)
    env = {
        "LFF_DROP_FOLDER": str(drop),
        "LFF_STORE_URL": f"sqlite:///{root / 'store.db'}",
        "LFF_OUTPUT_FOLDER": str(root / "out"),
        "LFF_N_JOBS": "1",
    }
    return run_cli("--quiet", "nightly", env=env, state_dir=state_dir), root / "out" / "reports", env


def _open_complaints(n=12, **columns) -> pd.DataFrame:
    first = (pd.Period(dt.date.today(), "M") - 2).start_time.date()
    return pd.DataFrame(
        {
            "complaint_id": [f"N-{i}" for i in range(n)],
            "received_date": [(first + dt.timedelta(days=2 * i)).isoformat() for i in range(n)],
            "service": ["North" if i % 2 else "South" for i in range(n)],
            "text": ["Nobody called me back about my mother's care package."] * n,
            "feedback_type": ["complaint"] * n,
            **columns,
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("export", ["no closed_date column", "nothing closed"])
def test_nightly_reports_when_no_complaint_in_scope_is_closed(export, council_model, state_dir, tmp_path):
    frame = _open_complaints() if export == "no closed_date column" else _open_complaints(closed_date="", outcome="")
    result, folder, env = _nightly_on(frame, tmp_path, state_dir)
    assert result.returncode == 0, result.stderr
    html = (folder / "theme_report.html").read_text()
    assert "12 pieces of feedback received" in html
    assert "None of the 12 complaints received in the period has been closed" in html
    assert "no learning stage has started" in html and "cannot be measured" in html  # no acknowledgement dates
    assert (folder / "theme_report.xlsx").is_file() and (folder / "learning_bulletin.md").is_file()
    engine = store.connect(env["LFF_STORE_URL"])
    assert store.read_runs(engine)["status"].iloc[0] == "success"
    one = run_cli("report", "--service", "North", "--output", str(tmp_path / "north"), env=env, state_dir=state_dir)
    assert one.returncode == 0, one.stderr
    assert (
        "None of the 6 complaints received in the period has been closed"
        in (tmp_path / "north" / "theme_report.html").read_text()
    )


@pytest.mark.slow
def test_a_report_failure_is_recorded_as_a_failure_in_the_ledger(council_model, settings, tmp_path, monkeypatch):
    from pipelines import nightly, reports

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(reports, "run_reports", broken)
    drop = tmp_path / "drop"
    drop.mkdir()
    _open_complaints(3).to_csv(drop / "export.csv", index=False)
    local = settings.model_copy(
        update={
            "drop_folder": drop,
            "store_url": f"sqlite:///{tmp_path / 's.db'}",
            "output_folder": tmp_path,
            "n_jobs": 1,
        }
    )
    summary = nightly.run_nightly(local, progress=False)
    assert summary.exit_code == nightly.EXIT_FAILURE and summary.counts["scored"] == 3  # the tagging is kept
    run = store.read_runs(store.connect(local.store)).iloc[0]
    assert run["status"] == "reports failed" and "disk full" in run["message"]


def test_themes_are_shown_by_their_taxonomy_label_or_the_id_in_sentence_case(tmp_path, settings):
    from pipelines.taxonomy import Taxonomy

    path = tmp_path / "taxonomy.yaml"
    path.write_text(
        "feedback_types:\n  complaint:\n    themes:\n"
        "      quality_of_service: {definition: d, label: Quality and safety of care}\n"
        "      process_not_followed: {definition: d}\n"
    )
    labels = Taxonomy.from_file(path).labels()
    assert labels == {
        "quality_of_service": "Quality and safety of care",
        "process_not_followed": "Process not followed",
    }
    frame = _complaints([{"received_date": "2025-03-03", "theme": "quality_of_service"} for _ in range(6)])
    report = build_theme_report(
        ReportData(
            frame, frame.iloc[:0], dt.date(2025, 1, 1), dt.date(2025, 12, 31), dt.date(2026, 1, 5), None, labels
        ),
        settings,
    )
    by_theme = report.sections[0].tables[0].frame
    assert by_theme.index.tolist() == ["Quality and safety of care"] and by_theme.iloc[0, 0] == 6


def test_the_report_reads_the_periods_rows_and_columns_not_the_store(tmp_path, settings):
    from sqlalchemy import event

    from pipelines.reports import load_report_data

    engine = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    rows = _complaints(
        [{"received_date": d} for d in ["2020-01-06", "2025-03-03", "2025-03-04"]]  # 2020: outside every window
    ).assign(text_sha256="x", details_sha256="y", text_redacted="The carer did not come.")
    rows = rows[[c for c in store.COMPLAINT_FIELDS if c in rows.columns]]
    store.write_batch(engine, rows, None, "r1", "m", "1")
    statements = []
    event.listen(engine, "before_cursor_execute", lambda c, cur, sql, *a: statements.append(sql))
    data = load_report_data(
        engine,
        settings.model_copy(update={"model_name": "none"}),
        dt.date(2025, 1, 1),
        dt.date(2025, 12, 31),
        None,
        dt.date(2026, 1, 5),
    )
    period = data.now.facts[data.now.facts["in_period"]]
    assert period["n"].sum() == 2 and data.before.facts["n"].sum() == 0  # 2020 is outside every window
    assert sorted(data.now.chosen["complaint_id"]) == ["C-1", "C-2"]  # the examples, read by id
    assert "text_redacted" not in data.now.facts.columns and "complaint_id" not in data.now.facts.columns
    reads = [s for s in statements if "FROM complaints" in s]
    assert reads and all("received_date >=" in s or "complaint_id IN" in s for s in reads), reads
    assert all("text_redacted" not in s.split("FROM")[0] for s in reads if "received_date >=" in s)


def test_the_model_quality_says_what_it_was_measured_on():
    from pipelines.reports import measured_on

    fft = measured_on({"crosswalk": "nhs_fft_phase1.yaml", "evaluation": "stratified 20% hold-out"}, 1533)
    assert (
        fft
        == "measured on NHS Friends and Family Test feedback mapped to your themes (stratified 20% hold-out, n = 1533)"
    )
    own = measured_on(
        {"crosswalk": "", "input_file": "store-labelled.csv", "evaluation": "5-fold cross-validation"}, 240
    )
    assert own.startswith("measured on your own labelled complaints (store-labelled.csv)") and "n = 240" in own
    assert "held-out data" not in fft + own


def test_the_report_from_chunked_facts_equals_the_report_from_rows(settings):
    """Read in chunks and merged into facts, a report has the same tables as from the rows."""
    from pipelines.reports import digest

    rows = _complaints(
        [
            {"received_date": f"2025-0{1 + i % 6}-{10 + i % 9}", "service": ["North", "South", None][i % 3],
             "closed_date": None if i % 4 == 0 else f"2025-0{2 + i % 6}-0{1 + i % 8}",
             "acknowledged_date": None if i % 5 == 0 else f"2025-0{1 + i % 6}-{12 + i % 9}",
             "outcome": ["upheld", "Partially upheld", "", "Resolved locally"][i % 4],
             "theme": ["communication", "quality_of_service", "process_not_followed"][i % 3],
             "feedback_type_given": "compliment" if i % 7 == 0 else "complaint",
             "needs_review": i % 2 == 0, "theme_confidence": 0.3 + (i % 10) / 20,
             "ombudsman_referral": "yes" if i % 6 == 0 else "no"}
            for i in range(60)
        ]
    )  # fmt: skip
    start, end, today = dt.date(2025, 1, 1), dt.date(2025, 12, 31), dt.date(2025, 6, 2)
    whole = build_theme_report(ReportData(rows, rows.iloc[:0], start, end, today), settings)
    chunks = [rows.iloc[i : i + 7] for i in range(0, len(rows), 7)]
    now = digest(chunks, {}, start, end, today)
    assert len(now.facts) < len(rows) and now.facts["n"].sum() == len(rows)
    data = ReportData(
        rows.iloc[:0], rows.iloc[:0], start, end, today, now=now, before=digest([], {}, None, None, today)
    )
    chunked = build_theme_report(data, settings)
    for a, b in zip(whole.sections, chunked.sections):
        assert a.intro == b.intro
        for x, y in zip(a.tables, b.tables):
            pd.testing.assert_frame_equal(x.frame, y.frame, check_dtype=False)


def test_the_overdue_list_names_the_longest_overdue_when_there_are_more(settings, monkeypatch):
    import pipelines.reports as reports

    monkeypatch.setattr(reports, "OVERDUE_LISTED", 1)
    rows = _complaints(
        [
            {"received_date": "2025-03-03", "closed_date": "2025-03-31"},  # learning due 30 April
            {"received_date": "2025-03-03", "closed_date": "2025-03-10"},  # due earlier: overdue longer
        ]
    )
    start, end, today = dt.date(2025, 1, 1), dt.date(2025, 12, 31), dt.date(2025, 6, 2)
    report = build_theme_report(ReportData(rows, rows.iloc[:0], start, end, today), settings)
    section = next(s for s in report.sections if s.title == "Learning actions")
    assert "2 overdue" in section.intro and "It names the 1 overdue longest." in section.intro
    listed = next(t.frame for t in section.tables if t.caption == "Overdue learning stages")
    assert listed.index.tolist() == ["C-1"]


def test_the_bulletin_is_built_from_small_frames_without_a_store(settings):
    """build_bulletin is pure: groups, the last bulletin and monthly counts in, a bulletin out."""
    from pipelines.reports import BulletinData, build_bulletin, label_of, theme_labels

    groups = pd.DataFrame(
        {
            "group_id": [0, 1], "group_label": ["duty rota cover", "discharge planning"], "n_points": [5, 2],
            "n_reviews": [3, 1], "recurring": [True, False],
            "representative_points": ["rota gaps at weekends | cover not escalated", "discharge was rushed"],
        }
    )  # fmt: skip
    months = pd.period_range("2025-01", "2025-07", freq="M", name="month")
    history = pd.DataFrame({"communication": [4, 5, 4, 6, 5, 4, 30], "process_not_followed": [6] * 7}, index=months)
    previous = {"created_at": dt.datetime(2025, 6, 30), "groups": {"0": {"n_points": 3, "n_reviews": 2}}}
    bulletin = build_bulletin(BulletinData(groups, previous, history, dt.date(2025, 7, 31)), settings)
    shown = bulletin.groups.set_index("group_label")
    assert shown.loc["duty rota cover", "status"] == "growing" and shown.loc["duty rota cover", "growth"] == 2
    assert shown.loc["discharge planning", "status"] == "new"  # not in the last bulletin, so shown although single
    assert bulletin.since == "30 June 2025" and bulletin.month == "July 2025"
    emerging = bulletin.themes.set_index("theme")["emerging"]
    assert emerging[emerging].index.tolist() == [label_of("communication", theme_labels(settings))]
    assert bulletin.counts["0"] == {"n_points": 5, "n_reviews": 3}
