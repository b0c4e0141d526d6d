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
from pipelines.reports import emerging_themes, highlight, markdown_escape, suppress
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


def test_small_numbers_are_suppressed_but_zero_and_large_are_shown():
    shown = suppress(pd.DataFrame({"x": [0, 1, 4, 5, 17]}), 5)
    assert shown["x"].tolist() == ["0", "<5", "<5", "5", "17"]


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
    today = dt.date.today()
    rows = []
    for i in range(30):
        received = today - dt.timedelta(days=3 + i)
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


def test_the_bulletin_says_which_groups_are_new_and_growing(tmp_path, settings):
    from pipelines.reports import build_bulletin, write_bulletin

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
    first = build_bulletin(engine, settings)
    assert set(first.groups["status"]) == {"recurring"}  # nothing to compare with yet
    write_bulletin(first, tmp_path / "b1", engine)
    store.write_learning(
        engine,
        "run2",
        "f2",
        points,
        groups([(0, "duty triage", 6, 4), (1, "discharge", 2, 2), (2, "mental health", 2, 2)]),
    )
    second = build_bulletin(engine, settings).groups.set_index("group_label")
    assert second.loc["mental health", "status"] == "new"
    assert second.loc["duty triage", "status"] == "growing" and second.loc["duty triage", "growth"] == 2
    assert second.loc["discharge", "status"] == "recurring"
    assert second.index[0] == "mental health"  # new first


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
            page.screenshot(path=str(ARTIFACTS / "theme_report_200pct.png"))
        finally:
            browser.close()
    outside = [u for u in requests if not (u.startswith("data:") or u == page_path.as_uri())]
    assert outside == [], outside
    assert console_errors == [] and page_errors == [], (console_errors, page_errors)
    assert len(images) >= 3 and all(alt.strip() and width > 0 for alt, width in images), images
    assert all(n >= 1 for n in charts_with_tables)
    assert headings[0] == 1 and all(b - a <= 1 for a, b in zip(headings, headings[1:])), headings
    assert unheaded == 0 and overflow <= 0, overflow
    assert page_path.as_uri() in requests
    assert (ARTIFACTS / "theme_report.png").stat().st_size > 10_000


def test_reports_on_an_empty_store_say_there_is_nothing_rather_than_fail(tmp_path, settings):
    from pipelines.reports import run_reports

    empty = settings.model_copy(update={"store_url": f"sqlite:///{tmp_path / 'empty.db'}"})
    paths = run_reports(empty, tmp_path / "out", today=dt.date(2026, 11, 26))
    html = (tmp_path / "out" / "theme_report.html").read_text()
    assert len(paths) == 4 and "0 pieces of feedback received" in html and "No complaints in the period." in html
    assert "No recurring, new or growing learning groups." in (tmp_path / "out" / "learning_bulletin.md").read_text()
