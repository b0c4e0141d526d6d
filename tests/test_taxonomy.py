import numpy as np
import pandas as pd
import pytest

from pipelines.config import PROJECT_ROOT
from pipelines.taxonomy import Crosswalk, Taxonomy, TaxonomyError

TAXONOMY = PROJECT_ROOT / "data" / "taxonomy.yaml"
CROSSWALK = PROJECT_ROOT / "data" / "crosswalks" / "nhs_fft_phase1.yaml"


def test_default_taxonomy_has_the_council_themes():
    tax = Taxonomy.from_file(TAXONOMY)
    assert tax.feedback_type_of() == {
        "quality_of_service": "complaint",
        "communication": "complaint",
        "process_not_followed": "complaint",
        "general_service": "compliment",
        "staff_behaviour": "compliment",
    }
    assert all(t.definition for t in tax.themes)


def test_sub_themes_roll_up_and_unknown_labels_name_the_row(tmp_path):
    tax = Taxonomy.from_file(TAXONOMY)
    labels = pd.Series(["timeliness", "staff_conduct;communication", "process_not_followed"], name="theme")
    assert tax.resolve_labels(labels, multi_label=True).tolist() == [
        "communication",
        "quality_of_service;communication",
        "process_not_followed",
    ]
    with pytest.raises(TaxonomyError, match=r"row 1, column 'theme': unknown theme 'parking'"):
        tax.resolve_labels(pd.Series(["communication", "parking"], name="theme"), multi_label=False, source="x.csv")


def test_a_council_can_rename_themes_without_code_changes(tmp_path):
    custom = tmp_path / "taxonomy.yaml"
    custom.write_text(
        "feedback_types:\n  complaint:\n    themes:\n      delays: {definition: Late}\n      rudeness: Rude staff\n"
        "  compliment:\n    themes:\n      thanks: {definition: Thanks}\n"
    )
    tax = Taxonomy.from_file(custom)
    assert tax.theme_names == ["delays", "rudeness", "thanks"]
    assert tax.feedback_type_of()["thanks"] == "compliment"


def test_duplicate_theme_names_are_rejected(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("feedback_types:\n  complaint:\n    themes:\n      a: {sub_themes: {b: x}}\n      b: y\n")
    with pytest.raises(TaxonomyError, match="'b' is defined twice"):
        Taxonomy.from_file(bad)


def test_crosswalk_decides_every_fft_theme_and_lists_only_real_codes(fft):
    crosswalk = Crosswalk.from_file(CROSSWALK)
    crosswalk.check_against(Taxonomy.from_file(TAXONOMY))
    # The file holds our decisions, not the dataset's theme labels: every code is decided itself.
    assert not crosswalk.group_targets and not set(fft["label"]) & set(crosswalk.reasons)
    # ...and every exception names a code the data has.
    # Every one of the framework's codes is decided on its own, for both polarities, with a reason.
    decided = {code for code, _ in crosswalk.code_targets}
    assert decided == set(fft["code"]), decided ^ set(fft["code"])
    assert all((code, t) in crosswalk.code_targets for code in decided for t in ("complaint", "compliment"))
    assert decided <= set(crosswalk.reasons)
    assert all(len(r) > 10 for r in crosswalk.reasons.values())


def test_a_crosswalk_exception_overrides_its_theme_for_the_polarities_it_gives(tmp_path):
    tax = Taxonomy.from_file(TAXONOMY)
    path = tmp_path / "walk.yaml"
    path.write_text(
        "source_column: code\ngroup_column: label\npolarity: {column: score}\n"
        "groups:\n  - {group: Staff, complaint: staff_conduct, compliment: staff_behaviour, reason: staff}\n"
        "exceptions:\n  - {code: sl, complaint: process_not_followed, reason: staffing levels}\n"
        "  - {code: zz, compliment: null, reason: excluded praise}\n"
    )
    rows = pd.DataFrame({"code": ["sa", "sl", "sl", "zz", "zz"], "label": ["Staff"] * 5, "score": [-1, -2, 3, -1, 2]})
    mapped = Crosswalk.from_file(path).apply(rows, tax)
    assert mapped["theme"].tolist() == ["quality_of_service", "process_not_followed", "staff_behaviour",
                                        "quality_of_service"]  # fmt: skip
    assert mapped.index.tolist() == [0, 1, 2, 3]  # the excluded praise (row 4) is dropped


def test_crosswalk_polarity_splits_complaints_from_compliments(fft):
    tax = Taxonomy.from_file(TAXONOMY)
    mapped = Crosswalk.from_file(CROSSWALK).apply(fft, tax)
    score = pd.to_numeric(mapped["criticality"], errors="coerce")
    types = mapped["theme"].map(tax.feedback_type_of())
    assert (types[score < 0] == "complaint").all()
    assert (types[score > 0] == "compliment").all()
    assert not (score == 0).any() and score.notna().all()  # neutral and malformed are excluded
    # Staff praise is staff behaviour; a staff complaint rolls up from staff_conduct to quality_of_service.
    staff = mapped[mapped["code"] == "sa"]
    assert set(staff.loc[score[staff.index] > 0, "theme"]) == {"staff_behaviour"}
    assert set(staff.loc[score[staff.index] < 0, "theme"]) == {"quality_of_service"}
    assert set(mapped["theme"]) == set(tax.theme_names)


def test_taxonomy_examples_are_read_per_theme_and_sub_theme_and_checked(tmp_path):
    tax = Taxonomy.from_file(TAXONOMY)
    rows = tax.example_rows()
    per_label = rows.groupby("sub_label").size()
    # At least 10 made-up examples per complaint sub-theme (or theme without sub-themes) and compliment theme.
    wanted = {s for t in tax.themes for s in (t.sub_themes or [t.name])}
    assert set(per_label.index) == wanted and (per_label >= 10).all(), per_label
    assert rows.loc[rows["sub_label"] == "timeliness", "theme"].eq("communication").all()
    bad = tmp_path / "bad.yaml"
    bad.write_text("feedback_types:\n  complaint:\n    themes:\n      delays: Late\nexamples:\n  rudeness: [Rude]\n")
    with pytest.raises(TaxonomyError, match="examples given for 'rudeness', which is not a theme or sub-theme"):
        Taxonomy.from_file(bad)


def test_a_code_the_crosswalk_does_not_decide_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "walk.yaml"
    path.write_text(
        "source_column: code\npolarity: {column: score}\n"
        "codes:\n  - {code: sa, complaint: staff_conduct, compliment: staff_behaviour, reason: staff}\n"
    )
    rows = pd.DataFrame({"code": ["sa", "qq", "qq"], "score": [-1, -1, 0]})
    with caplog.at_level("WARNING", logger="pipelines.taxonomy"):
        mapped = Crosswalk.from_file(path).apply(rows, Taxonomy.from_file(TAXONOMY))
    assert mapped["code"].tolist() == ["sa"]
    warned = [r for r in caplog.records if "no decision" in r.getMessage()]
    assert len(warned) == 1 and warned[0].fields == {"crosswalk": "walk", "rows": 1, "codes": ["qq"]}


def test_the_council_benchmark_set_copies_no_example_and_no_sample_complaint():
    """benchmarks/council_learning_curve.py stands in for complaints the model has never seen,
    so no benchmark text may be a near-copy (word and word-pair TF-IDF cosine >= 0.6) of a
    taxonomy example, which the model trains on, or of a sample complaint."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    bench = pd.read_csv(PROJECT_ROOT / "benchmarks" / "data" / "council_complaints_madeup.csv", dtype=str)["text"]
    examples = Taxonomy.from_file(TAXONOMY).example_rows()["text"]
    sample = pd.read_csv(PROJECT_ROOT / "data" / "sample" / "complaints.csv", dtype=str)["text"].dropna()
    assert len(bench) >= 300 and bench.is_unique
    vectors = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(pd.concat([bench, examples, sample]))
    for name, texts in (("taxonomy example", examples), ("sample complaint", sample)):
        cosine = (vectors.transform(texts) @ vectors.transform(bench).T).toarray()
        i, j = np.unravel_index(cosine.argmax(), cosine.shape)
        assert cosine[i, j] < 0.6, f"benchmark row {j} is a near-copy of {name} {texts.iloc[i]!r}"
