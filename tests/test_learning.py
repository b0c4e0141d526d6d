"""Learning points: extraction against a hand-marked sample, documents, grouping, the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.datasets import fetch_pfd_reports, fetch_pfd_reviews
from pipelines.evaluation import boundary_agreement, theme_recovery
from pipelines.learning import (
    Grouping,
    assign_groups,
    extract_points,
    extract_review_points,
    fit_groups,
    read_review_document,
    run_learning,
)
from pipelines.text import person_names
from tests.conftest import run_cli

FIXTURES = Path(__file__).parent / "fixtures"
GOLD = Path(__file__).parent / "data" / "pfd_learning_points.csv"
SIR_STARTS = ["The community team's knowledge", "The processes in the team", "The staffing of the duty rota"]


@pytest.fixture(scope="module")
def pfd(public_data_dir):
    return fetch_pfd_reports(public_data_dir)


@pytest.fixture(scope="module")
def pfd_points(public_data_dir):
    reviews = fetch_pfd_reviews(public_data_dir)
    points, _ = extract_review_points(reviews)
    return points


def test_extraction_matches_the_hand_marked_sample(pfd):
    gold = pd.read_csv(GOLD, dtype=str, keep_default_na=False)
    assert gold["report_id"].nunique() >= 25
    matched, total = boundary_agreement(gold, pfd.set_index("id")["concerns"])
    assert matched / total >= 0.90, f"{matched}/{total} hand-marked points extracted with the same boundaries"


@pytest.mark.parametrize("name", ["sir_seed.docx", "sir_seed.pdf"])
def test_the_seed_sir_yields_its_three_learning_points(name):
    review = read_review_document(FIXTURES / name)
    points = extract_points(review["text"])
    assert [p["point_text"][: len(s)] for p, s in zip(points, SIR_STARTS)] == SIR_STARTS
    assert len(points) == 3
    assert review["team"] == "Community Social Work Team"


def test_boilerplate_and_lead_ins_are_dropped():
    text = (
        "The MATTERS OF CONCERN are as follows:\n\n(1) Staff did not record the risk assessment after the call.\n\n"
        "(2) The duty rota left no senior cover at weekends.\n\nThis report is being sent to the Trust and the council.\n"
    )
    points = extract_points(text)
    assert [p["point_text"] for p in points] == [
        "Staff did not record the risk assessment after the call.",
        "The duty rota left no senior cover at weekends.",
    ]
    assert [p["marker"] for p in points] == ["(1)", "(2)"]


def test_paragraphs_under_learning_headings_only():
    text = (
        "Background\n\nMr Jones was known to the team for two years and lived alone.\n\n"
        "Learning\n\nThe team did not escalate the missed visits to a manager.\n\n"
        "Referrals to the crisis team were not followed up within 24 hours.\n"
    )
    points = extract_points(text)
    assert [p["point_text"][:30] for p in points] == [
        "The team did not escalate the ",
        "Referrals to the crisis team w",
    ]
    assert {p["section"] for p in points} == {"learning"}


def test_unstructured_review_falls_back_to_sentences():
    text = " ".join(
        f"The {w} team did not share the safety plan with the family before discharge on day {i}."
        for i, w in enumerate(["duty", "crisis", "ward", "community", "hospital", "discharge", "outreach", "liaison"])
    )
    points = extract_points(text)
    assert len(points) == 8 and all(p["point_text"].startswith("The ") for p in points)


def test_points_are_redacted_including_the_subject_name(pfd_points, pfd):
    names = dict(zip(pfd["id"], pfd["investigation"].map(person_names)))
    leaked = [
        (rid, w)
        for rid, text in zip(pfd_points["report_id"], pfd_points["point_text"])
        for w in names[rid]
        if len(w) > 3 and f" {w} " in f" {text} "
    ]
    assert len(leaked) <= len(pfd_points) * 0.01, leaked[:5]
    assert pfd_points["point_text"].str.contains(r"\[NAME\]").sum() > 50


def test_bad_documents_are_reported_by_name_and_the_rest_processed(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    for name in ["sir_seed.docx", "scanned.pdf", "corrupt.docx"]:
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    (folder / "empty.txt").write_text("   \n")
    (folder / "huge.txt").write_text("The team did not record the visit. " * 150_000)  # about 5 MB
    (folder / "no_learning.txt").write_text("Notes\n\nShort.\n")
    (folder / "reviews.csv").write_text("id,date,team\nsir_seed.docx,2024-02-15,Community Social Work Team North\n")
    summary = run_learning(folder, tmp_path / "points.csv", tmp_path / "groups.csv", grouping_dir=None)
    points = pd.read_csv(tmp_path / "points.csv", dtype=str, keep_default_na=False)
    assert points["report_id"].unique().tolist() == ["sir_seed"]
    assert points["date"].unique().tolist() == ["2024-02-15"]
    assert points["team"].unique().tolist() == ["Community Social Work Team North"]
    reasons = " ".join(p["reason"] for p in summary.problems)
    for name in ["scanned.pdf", "corrupt.docx", "empty.txt", "huge.txt", "no_learning"]:
        assert name in reasons
    assert "no text layer" in reasons and summary.exit_code == 3


def test_grouping_is_deterministic_and_keeps_ids_as_reviews_arrive(pfd_points, tmp_path):
    grouping, assigned = fit_groups(pfd_points, random_state=0)
    again, assigned_again = fit_groups(pfd_points, random_state=0)
    assert (assigned == assigned_again).all() and grouping.labels == again.labels
    assert (assigned == -1).mean() < 0.15  # the ungrouped bucket stays small
    reports = sorted(pfd_points["report_id"].unique())
    first = pfd_points[pfd_points["report_id"].isin(reports[: int(len(reports) * 0.8)])].reset_index(drop=True)
    early, early_ids = fit_groups(first, random_state=0)
    early.save(tmp_path / "grouping")
    later, later_ids = assign_groups(Grouping.load(tmp_path / "grouping"), pfd_points)
    index = pd.Series(later_ids, index=pfd_points["report_id"] + "#" + pfd_points["position"].astype(str))
    kept = (index.loc[first["report_id"] + "#" + first["position"].astype(str)].to_numpy() == early_ids).mean()
    assert kept >= 0.9
    new = ~pfd_points["report_id"].isin(first["report_id"])
    assert (later_ids[new.to_numpy()] >= 0).mean() > 0.5  # new points mostly join existing groups
    assert later.labels[: len(early.labels)] == early.labels


def test_a_grouping_saved_with_another_representation_is_refused_by_name(pfd_points, tmp_path):
    grouping, _ = fit_groups(pfd_points.head(60), random_state=0)
    folder = grouping.save(tmp_path / "grouping")
    state = json.loads((folder / "groups.json").read_text())
    state["representation"] = "lemma-lsa"  # what an earlier version would have written
    (folder / "groups.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="earlier version"):
        Grouping.load(folder)


def test_seeded_themes_become_named_groups(pfd_points):
    seeds = [
        {
            "name": "Risk assessment",
            "examples": ["risk assessment was not updated", "no formal risk assessment was completed"],
        },
        {
            "name": "Duty rota and escalation",
            "examples": ["duty rota cover", "escalation of high-risk cases to a senior"],
        },
    ]
    grouping, assigned = fit_groups(pfd_points, seeds, random_state=0)
    assert grouping.labels[:2] == ["Risk assessment", "Duty rota and escalation"]
    risk = pfd_points["point_text"][assigned == 0]
    assert len(risk) >= 10 and risk.str.contains("risk", case=False).mean() > 0.6
    assert len(grouping.labels) > 2  # new groups are found beside the seeded ones


def test_theme_recovery_metric_on_known_answers():
    labels = pd.DataFrame(
        {"a": [True] * 6 + [False] * 6, "b": [False] * 6 + [True] * 6}, index=[f"r{i}" for i in range(12)]
    )
    perfect = pd.DataFrame({"report_id": labels.index, "group_id": [0] * 6 + [1] * 6})
    assert theme_recovery(perfect, labels)["adjusted"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noise = [
        theme_recovery(perfect.assign(group_id=rng.integers(0, 2, 12)), labels, seed=i)["adjusted"] for i in range(20)
    ]
    assert abs(np.mean(noise)) < 0.2


def test_grouping_beats_kmeans_on_sentences_at_theme_recovery(pfd_points, pfd):
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    from pipelines.text import make_nlp

    labels = pfd.set_index("id").filter(like="family_").apply(lambda s: s.str.lower() == "true")
    _, assigned = fit_groups(pfd_points, random_state=0)
    ours = theme_recovery(pfd_points.assign(group_id=assigned), labels)
    nlp = make_nlp(sentences=True)
    sentences = pd.DataFrame(
        [(r, s.text) for r, t in zip(pfd["id"], pfd["concerns"]) for s in nlp(t).sents if len(s.text.strip()) > 20],
        columns=["report_id", "text"],
    )
    tfidf = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit_transform(sentences["text"])
    baseline = theme_recovery(
        sentences.assign(group_id=KMeans(labels.shape[1], random_state=0, n_init=10).fit_predict(tfidf)), labels
    )
    # The bar: 0.05 adjusted above the baseline. Weak labels make the score move with the
    # seed (0.06 to 0.09 adjusted over seeds 0-4 in benchmarks/learning_quality.py).
    assert ours["adjusted"] > baseline["adjusted"] + 0.05


def test_learning_cli_contract(tmp_path, public_data_dir):
    args = ["learning", "--input", str(public_data_dir / "pfd_suicide_reports.csv"), "--id-column", "id", "--text-column", "concerns",
            "--date-column", "date", "--name-column", "investigation", "--output", str(tmp_path / "points.csv"),
            "--groups", str(tmp_path / "groups.csv")]  # fmt: skip
    result = run_cli(*args, state_dir=tmp_path / "state")
    assert result.returncode == 0, result.stderr
    points = pd.read_csv(tmp_path / "points.csv", dtype=str, keep_default_na=False)
    groups = pd.read_csv(tmp_path / "groups.csv", dtype=str, keep_default_na=False)
    assert {"report_id", "point_text", "group_id", "group_label", "position", "section"} <= set(points.columns)
    assert {
        "group_id",
        "group_label",
        "n_points",
        "n_reviews",
        "first_seen",
        "last_seen",
        "recurring",
        "representative_points",
    } <= set(groups.columns)
    assert (groups["recurring"] == "True").eq(groups["n_reviews"].astype(int) >= 2).all()
    assert set(points["group_id"].astype(int)) - {-1} == set(groups["group_id"].astype(int))
    assert (points.loc[points["group_id"] == "-1", "group_label"] == "").all()
    # A second run reuses the saved grouping: identical output.
    again = run_cli(
        *args[:-4],
        "--output",
        str(tmp_path / "points2.csv"),
        "--groups",
        str(tmp_path / "groups2.csv"),
        state_dir=tmp_path / "state",
    )
    assert again.returncode == 0, again.stderr
    pd.testing.assert_frame_equal(points, pd.read_csv(tmp_path / "points2.csv", dtype=str, keep_default_na=False))
    assert "Andrew Herrin Dodds" not in (tmp_path / "points.csv").read_text()
