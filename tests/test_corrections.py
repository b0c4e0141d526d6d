"""The corrections loop: export the review queue, an analyst edits it (with mistakes), import
it back, and retrain on the store's labels with the analyst's themes winning."""

import openpyxl
import pandas as pd
import pytest

from pipelines import store
from pipelines.datasets import sample_complaints_path
from pipelines.train import assemble_training_set
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tagged_store(council_model, state_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    drop = root / "drop"
    drop.mkdir()
    sample = pd.read_csv(sample_complaints_path(), dtype=str, keep_default_na=False)
    # Half the sample without the export's theme, so the model's tags are all there is for them.
    sample.loc[sample.index % 2 == 0, "theme"] = ""
    sample.to_csv(drop / "export.csv", index=False)
    env = {
        "LFF_DROP_FOLDER": str(drop),
        "LFF_STORE_URL": f"sqlite:///{root / 'store.db'}",
        "LFF_OUTPUT_FOLDER": str(root / "out"),
        "LFF_N_JOBS": "1",
    }
    assert run_cli("--quiet", "nightly", env=env, state_dir=state_dir).returncode == 0
    return {"env": env, "root": root, "state_dir": state_dir, "engine": store.connect(env["LFF_STORE_URL"])}


def test_review_round_trip_with_bad_rows_then_retraining_uses_the_analysts_themes(tagged_store, settings):
    env, root, state = tagged_store["env"], tagged_store["root"], tagged_store["state_dir"]
    review = root / "review.xlsx"
    exported = run_cli("review", "export", "--output", str(review), "--audit", "10", env=env, state_dir=state)
    assert exported.returncode == 0, exported.stderr
    book = openpyxl.load_workbook(review)
    sheet = book["review"]
    header = [c.value for c in sheet[1]]
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    frame = pd.DataFrame(rows, columns=header)
    unsure = frame[frame["why_listed"] == "model unsure"]
    assert len(unsure) > 5 and (frame["why_listed"] == "audit sample of confident tags").sum() == 10
    # In teaching order: the least confident first, the model's themes taking turns; the sheet says so.
    assert unsure["confidence"].iloc[0] == unsure["confidence"].min()
    first = unsure["model_theme"].head(unsure["model_theme"].nunique())
    assert first.is_unique
    assert "teaches the model most" in " ".join(str(c.value) for c in book["about"]["A"])
    assert frame["analyst_theme"].isna().all() and not frame["text"].str.contains("@example").any()
    assert sheet.data_validations.dataValidation  # the theme drop-down
    col = header.index("analyst_theme") + 1
    # The analyst's edits: two good rows, a sub-theme, and three bad ones.
    edits = {
        2: "process_not_followed",
        3: "Communication",  # case does not matter
        4: "timeliness",  # a sub-theme rolls up to communication
        5: "not_a_theme",
        7: '=HYPERLINK("http://evil.example","x")',
    }
    for row, value in edits.items():
        sheet.cell(row=row, column=col, value=value)
    sheet.cell(row=6, column=header.index("analyst_note") + 1, value="not sure, ask the team")
    book.save(review)
    imported = run_cli("review", "import", str(review), "--reviewer", "A. Analyst", env=env, state_dir=state)
    assert imported.returncode == 3, imported.stderr
    assert "3 corrections stored, 0 unchanged, 3 rows quarantined" in imported.stderr
    quarantine = next((root / "out").glob("review-quarantine-*.csv"))
    held = pd.read_csv(quarantine, dtype=str).set_index("source_row")
    assert "'not_a_theme' is not a theme" in held.loc["5", "_reason"]
    assert "is empty" in held.loc["6", "_reason"]
    assert "formula" in held.loc["7", "_reason"] and held.loc["7", "_column"] == "analyst_theme"
    engine = tagged_store["engine"]
    corrections = store.latest_corrections(engine).set_index("complaint_id")
    ids = frame["complaint_id"].tolist()
    assert corrections.loc[ids[0], "theme"] == "process_not_followed"
    assert corrections.loc[ids[1], "theme"] == "communication" and corrections.loc[ids[2], "theme"] == "communication"
    assert (corrections["reviewer"] == "A. Analyst").all()
    # Importing the same file again stores nothing new.
    again = run_cli("review", "import", str(review), env=env, state_dir=state)
    assert "0 corrections stored, 3 unchanged" in again.stderr
    # A later correction of the same complaint wins.
    book = openpyxl.load_workbook(review)
    book["review"].cell(row=2, column=col, value="quality_of_service")
    book.save(review)
    assert run_cli("review", "import", str(review), env=env, state_dir=state).returncode == 3
    # The model's tagging is untouched; the report's theme is the analyst's.
    tagged = store.current_taggings(engine).set_index("complaint_id")
    assert tagged.loc[ids[0], "analyst_theme"] == "quality_of_service"
    assert tagged.loc[ids[0], "theme"] == frame.loc[0, "model_theme"]
    # Retraining: the training set holds the analyst's labels for the corrected complaints.
    training, fingerprint = assemble_training_set(engine)
    training = training.set_index("complaint_id")
    assert training.loc[ids[0], "theme"] == "quality_of_service"
    assert training.loc[ids[1], "theme"] == "communication" and training.loc[ids[2], "theme"] == "communication"
    assert (training.loc[ids[:3], "label_source"] == "analyst correction").all()
    assert len(fingerprint) == 64 and not list(settings.state.glob("training/*.csv"))  # no copy on disk
    trained = run_cli("train", "--from-store", env=env, state_dir=state)
    assert trained.returncode == 0, trained.stderr
    assert "training set from the store" in trained.stderr and "macro-F1" in trained.stdout


def test_review_import_names_the_file_when_it_is_not_a_review_file(tagged_store, tmp_path):
    wrong = tmp_path / "wrong.xlsx"
    pd.DataFrame({"a": [1]}).to_excel(wrong, index=False)
    result = run_cli("review", "import", str(wrong), env=tagged_store["env"], state_dir=tagged_store["state_dir"])
    assert result.returncode == 2 and "wrong.xlsx: sheet 'review' not found" in result.stderr


def test_teaching_order_puts_uncertain_texts_first_spread_and_near_duplicates_last():
    from pipelines.corrections import teaching_order

    texts = [
        "The carer was late again this morning.",  # confident
        "Nobody replied to my letter about the charges.",  # least confident
        "Nobody replied to my letter about the charges!",  # a near-duplicate of the one above
        "The assessment has still not been done.",
        "The carers rushed the visit.",
    ]
    confidence = [0.95, 0.31, 0.32, 0.40, 0.35]
    themes = ["quality_of_service", "communication", "communication", "process_not_followed", "quality_of_service"]
    services = ["Home Care", "Finance", "Finance", "OT", "Home Care"]
    order = list(teaching_order(texts, confidence, themes, services))
    assert order[0] == 1 and order.index(1) < order.index(0)  # uncertain before confident
    # The other themes come before the second communication text, itself a near-duplicate: last.
    assert order[1:3] == [4, 3] and order[-1] == 2
