"""End to end through the CLI on real data: train the council model, then score with it."""

import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.datasets import sha256_of
from pipelines.score import score_file
from pipelines.tables import clean_text_cells, neutralise_formulas
from pipelines.tracking import configure as configure_mlflow
from tests.conftest import run_cli

OUTPUT = ["theme", "theme_confidence", "themes", "needs_review", "evidence"]


def test_train_reports_metrics_and_registers(council_model):
    out = council_model["stdout"]
    assert "macro-F1" in out and "micro-F1" in out
    for theme in ["quality_of_service", "communication", "process_not_followed", "general_service", "staff_behaviour"]:
        assert theme in out
    assert "registered complaint-themes version 1" in out
    # The crosswalk's FFT codes are learned as sub-themes of the council themes.
    assert "sub-themes learned too:" in out and "crosswalk codes (nhs_fft_phase1)" in out


def test_mlflow_run_has_params_metrics_plots_data_hash_and_commit(council_model, settings, public_data_dir):
    configure_mlflow(settings)
    version = MlflowClient().get_model_version_by_alias("complaint-themes", "champion")
    run = mlflow.get_run(version.run_id)
    assert run.data.tags["input_sha256"] == sha256_of(public_data_dir / "nhs_fft_phase1.csv")
    assert (
        len(run.data.tags["mlflow.source.git.commit"]) in (40, 7)
        or run.data.tags["mlflow.source.git.commit"] == "unknown"
    )
    assert run.data.params["crosswalk"] == "nhs_fft_phase1.yaml"
    assert 0.5 < run.data.metrics["macro_f1"] <= 1
    assert {"f1.communication", "precision.staff_behaviour", "recall.process_not_followed"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/calibration.png", "evaluation/metrics.json"} <= artifacts
    model = mlflow.models.get_model_info(f"models:/complaint-themes/{version.version}")
    # The export's feedback type is an optional input of the model itself.
    assert [(c.name, c.required) for c in model.signature.inputs.inputs] == [("text", True), ("feedback_type", False)]
    assert "theme_probabilities" in [c.name for c in model.signature.outputs.inputs]


def test_model_dir_is_a_loadable_pyfunc_with_probabilities(council_model):
    model = mlflow.pyfunc.load_model(str(council_model["model_dir"]))
    out = model.predict(
        pd.DataFrame(
            {
                "text": [
                    "Nobody called me back and I am still waiting for the assessment",
                    "Thank you, the carers were wonderful",
                ]
            }
        )
    )
    assert out["feedback_type"].tolist() == ["complaint", "compliment"]
    probs = json.loads(out["theme_probabilities"][0])
    assert set(probs) == {
        "quality_of_service",
        "communication",
        "process_not_followed",
        "general_service",
        "staff_behaviour",
    }
    assert out["theme"][0] == max(probs, key=probs.get)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_cli_keeps_all_columns_and_adds_tags(council_model, state_dir, fft, tmp_path, suffix):
    source = fft.sample(500, random_state=1).reset_index(drop=True)
    source.insert(0, "case_ref", [f"C{i:04d}" for i in range(len(source))])
    path = tmp_path / f"in{suffix}"
    source.to_csv(path, index=False) if suffix == ".csv" else source.to_parquet(path, index=False)
    out_path = tmp_path / f"out{suffix}"
    result = run_cli(
        "score", "--model", "models:/complaint-themes@champion", "--input", str(path), "--text-column", "feedback",
        "--id-column", "case_ref", "--output", str(out_path), "--keep-text", state_dir=state_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = pd.read_csv(out_path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(out_path)
    assert list(out.columns[: len(source.columns)]) == list(source.columns)
    assert set(OUTPUT) <= set(out.columns)
    assert out["case_ref"].tolist() == source["case_ref"].tolist()
    # CSV output makes line breaks plain line feeds, drops control characters and neutralises
    # cells a spreadsheet would run as formulas (starting =, +, -, @, tab).
    expected = neutralise_formulas(clean_text_cells(source)) if suffix == ".csv" else source
    assert out["feedback"].tolist() == expected["feedback"].tolist()
    if suffix == ".csv":
        assert not out["feedback"].str.contains("\r").any()
    assert pd.to_numeric(out["theme_confidence"]).between(0, 1).all()
    assert set(out["needs_review"].astype(str)) <= {"True", "False"}


def test_scoring_in_workers_matches_in_process(council_model, settings, fft, tmp_path):
    source = fft.head(3000)
    path = tmp_path / "in.csv"
    source.to_csv(path, index=False)
    one = settings.model_copy(update={"n_jobs": 1, "chunk_rows": 700})
    two = settings.model_copy(update={"n_jobs": 2, "chunk_rows": 700})
    score_file(str(council_model["model_dir"]), path, tmp_path / "a.csv", "feedback", settings=one, progress=False)
    score_file(str(council_model["model_dir"]), path, tmp_path / "b.csv", "feedback", settings=two, progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv"))


@pytest.mark.slow
def test_unknown_registered_model_is_a_clear_error(state_dir, tmp_path):
    path = tmp_path / "in.csv"
    pd.DataFrame({"text": ["late again"]}).to_csv(path, index=False)
    result = run_cli("score", "--model", "models:/no-such-model@champion", "--input", str(path), "--text-column", "text",
                     "--output", str(tmp_path / "o.csv"), state_dir=state_dir)  # fmt: skip
    assert result.returncode == 2
    assert "no-such-model" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_train_on_any_taxonomy_with_cross_validation(tmp_path, fft, state_dir):
    # The FFT's own 9 themes, no council taxonomy: labels are learned as they are.
    path = tmp_path / "fft_small.csv"
    fft.groupby("label").head(60).to_csv(path, index=False)
    result = run_cli("train", "--input", str(path), "--text-column", "feedback", "--label-column", "label", "--cv", "3",
                     state_dir=state_dir, check=True)  # fmt: skip
    assert "Couldn't be improved" in result.stdout and "Transition/coordination" in result.stdout
    assert "sub-themes learned" not in result.stdout
    # The same export with its sub-categories learned too.
    result = run_cli("train", "--input", str(path), "--text-column", "feedback", "--label-column", "label",
                     "--sub-label-column", "code", "--cv", "3", state_dir=state_dir, check=True)  # fmt: skip
    assert "sub-themes learned too:" in result.stdout and "(column code)" in result.stdout
    # Sub-labels are one per row, so they cannot go with multi-label training.
    result = run_cli("train", "--input", str(path), "--text-column", "feedback", "--label-column", "label",
                     "--sub-label-column", "code", "--multi-label", state_dir=state_dir)  # fmt: skip
    assert result.returncode == 2
    assert "--sub-label-column is for single-label training" in result.stderr.strip().splitlines()[-1]


def test_a_given_feedback_type_restricts_the_theme_to_that_types_themes(council_model, fft):
    from pipelines.score import score_texts

    path = str(council_model["model_dir"])
    texts = fft["feedback"].head(400).tolist()
    free = score_texts(path, texts)
    complaints = score_texts(path, texts, ["complaint"] * len(texts))
    compliments = score_texts(path, texts, ["Compliment"] * len(texts))  # case does not matter
    unstated = score_texts(path, texts, [""] * len(texts))
    assert set(complaints["theme"]) <= {"quality_of_service", "communication", "process_not_followed"}
    assert set(compliments["theme"]) <= {"general_service", "staff_behaviour"}
    assert (complaints["feedback_type"] == "complaint").all()
    pd.testing.assert_frame_equal(unstated, free)
    # Where the model already chose a complaint theme, stating "complaint" keeps it, and the
    # confidence (now conditional on the type) does not fall.
    same = free["feedback_type"] == "complaint"
    assert same.sum() > 50 and (complaints.loc[same, "theme"] == free.loc[same, "theme"]).all()
    assert (complaints.loc[same, "theme_confidence"] >= free.loc[same, "theme_confidence"] - 1e-12).all()


PRAISE = ["Thank you so much, the carers were wonderful and kind to my dad.", "Brilliant service, thank you all."]
COMPLAINT_THEMES = {"quality_of_service", "communication", "process_not_followed"}


def test_pyfunc_predict_takes_the_feedback_type_and_refuses_an_unknown_one(council_model):
    model = mlflow.pyfunc.load_model(str(council_model["model_dir"]))
    free = model.predict(pd.DataFrame({"text": PRAISE}))
    assert set(free["feedback_type"]) == {"compliment"}  # the text alone reads as praise
    given = model.predict(pd.DataFrame({"text": PRAISE, "feedback_type": ["complaint", " Complaint "]}))
    assert set(given["theme"]) <= COMPLAINT_THEMES and set(given["feedback_type"]) == {"complaint"}
    unknown = model.predict(pd.DataFrame({"text": PRAISE, "feedback_type": ["", None]}))
    pd.testing.assert_frame_equal(unknown, free)  # empty means unknown: the model decides
    with pytest.raises(Exception, match="'enquiry' is not a feedback type"):
        model.predict(pd.DataFrame({"text": PRAISE, "feedback_type": ["complaint", "enquiry"]}))


def test_score_cli_feedback_type_column_restricts_themes_and_quarantines_unknown_types(
    council_model, state_dir, tmp_path
):
    rows = pd.DataFrame(
        {
            "ref": ["A", "B", "C", "D", "E"],
            "text": [PRAISE[0], PRAISE[1], PRAISE[0], "Nobody rang me back about the assessment.", PRAISE[1]],
            "kind": ["complaint", "COMPLAINT", "", "compliment", "enquiry"],
        }
    )
    path = tmp_path / "typed.csv"
    rows.to_csv(path, index=False)
    result = run_cli(
        "score", "--model", str(council_model["model_dir"]), "--input", str(path), "--text-column", "text",
        "--id-column", "ref", "--feedback-type-column", "kind", "--output", str(tmp_path / "out.csv"),
        state_dir=state_dir,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False).set_index("ref")
    assert list(out.index) == ["A", "B", "C", "D"]
    assert set(out.loc[["A", "B"], "theme"]) <= COMPLAINT_THEMES and out.loc["C", "feedback_type"] == "compliment"
    assert out.loc["D", "theme"] in {"general_service", "staff_behaviour"}
    held = pd.read_csv(tmp_path / "out.quarantine.csv", dtype=str, keep_default_na=False)
    assert held["ref"].tolist() == ["E"] and held["_column"].tolist() == ["kind"]
    assert held["_reason"][0] == "kind 'enquiry' is not a feedback type of the taxonomy (complaint, compliment)"


def test_the_taxonomy_examples_are_learned_with_the_public_data(council_model):
    info = json.loads((council_model["model_dir"] / "artifacts" / "model_info.json").read_text())
    sources = info["training_sources"]
    assert list(sources) == ["input", "taxonomy examples"]
    assert sources["taxonomy examples"]["rows"] >= 100 and sources["taxonomy examples"]["weight"] > 1
    assert set(sources["taxonomy examples"]["rows_per_theme"]) == set(info["classes"])
    # The crosswalk's decisions give every council theme training rows.
    assert all(n >= 100 for n in sources["input"]["rows_per_theme"].values()), sources["input"]


@pytest.mark.slow
def test_train_add_public_data_learns_a_small_council_file_on_top(tmp_path, state_dir):
    council = pd.DataFrame(
        {
            "text": [
                "The broker never rang me back about the placement.",
                "I have chased the team five times and nobody replies.",
                "Mum was discharged without the assessment being done.",
                "We waited nine months for the panel to decide on funding.",
                "The carers left Dad in a wet bed all night.",
                "Meals were cold and the home smelt of urine.",
                "Thank you, the broker found a lovely home for Mum.",
                "The reablement worker was so kind to my father.",
            ]
            * 3,
            "theme": [
                "timeliness",
                "communication",
                "process_not_followed",
                "process_not_followed",
                "quality_of_service",
                "standard_of_service",
                "general_service",
                "staff_behaviour",
            ]
            * 3,  # fmt: skip
        }
    )
    path = tmp_path / "ours.csv"
    council.to_csv(path, index=False)
    result = run_cli("train", "--input", str(path), "--text-column", "text", "--label-column", "theme",
                     "--add-public-data", "--model-dir", str(tmp_path / "model"), state_dir=state_dir, check=True)  # fmt: skip
    info = json.loads((tmp_path / "model" / "artifacts" / "model_info.json").read_text())
    sources = info["training_sources"]
    assert list(sources) == ["input", "public", "taxonomy examples"]
    assert sources["input"]["rows"] == 24 and sources["public"]["rows"] > 7000
    assert sources["input"]["weight"] > sources["public"]["weight"] == 1.0
    assert info["evaluation"]["n_evaluated"] <= 24 * 0.2 + 1  # held out from the council's rows only
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    out = model.predict(pd.DataFrame({"text": council["text"].head(6), "feedback_type": "complaint"}))
    assert set(out["theme"]) <= COMPLAINT_THEMES
    assert "macro-F1" in result.stdout


def test_promotion_scoring_uses_the_stated_feedback_type(council_model, settings):
    """The promotion gate scores its evaluation set as the nightly run does: praise that the
    export says is a complaint is scored as a complaint."""
    from pipelines.registry import evaluate_model
    from pipelines.score import score_texts

    model = str(council_model["model_dir"])
    as_complaints = score_texts(model, PRAISE, ["complaint"] * len(PRAISE))["theme"]
    assert set(as_complaints) <= COMPLAINT_THEMES
    evaluation = pd.DataFrame({"text": PRAISE, "theme": as_complaints})
    assert evaluate_model(model, evaluation.assign(feedback_type="complaint"), settings)["macro_f1"] == 1.0
    assert evaluate_model(model, evaluation, settings)["macro_f1"] == 0.0  # read alone, they are compliments
