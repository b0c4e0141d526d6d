# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Retrain the theme model
#
# Load labelled data (and the analysts' corrections from the results store), train, compare
# with the champion on the fixed evaluation set, register, and promote through the gate.
# Every step is a call into the `pipelines` package, the same code the nightly job runs.
# Run it from the top, or with papermill:
#
# `papermill notebooks/retrain.ipynb out.ipynb -p labelled_file ../shared/data/nhs_fft_phase1.csv`

# %% tags=["parameters"]
state_dir = None  # None: the settings' default (LFF_STATE_DIR, else data/)
labelled_file = "../shared/data/nhs_fft_phase1.csv"  # a labelled export (relative to the project)
text_column = "feedback"
label_column = "code"
crosswalk = "data/crosswalks/nhs_fft_phase1.yaml"  # None when the labels are already the council's themes
use_corrections = True  # add the store's labelled complaints and analysts' corrections
model_name = "complaint-themes"
evaluation_file = None  # None: the evaluation_file setting, else data/evaluation/<model>-v1.csv (made if missing)
evaluation_share = 0.2
tolerance = 0.01  # the candidate's macro-F1 may be at most this much below the champion's
margin = 0.05  # and no theme's F1 may drop by more than this

# %%
from pathlib import Path

import pandas as pd

from pipelines import store
from pipelines.config import PROJECT_ROOT, Settings
from pipelines.registry import make_evaluation_set, promote
from pipelines.train import assemble_training_set, load_labelled, train

settings = Settings(**({"state_dir": Path(state_dir)} if state_dir else {}))
labelled = Path(labelled_file) if Path(labelled_file).is_absolute() else PROJECT_ROOT / labelled_file
walk = PROJECT_ROOT / crosswalk if crosswalk else None
evaluation = Path(evaluation_file) if evaluation_file else settings.evaluation_file
evaluation = evaluation or settings.state / "evaluation" / f"{model_name}-v1.csv"
settings = settings.model_copy(update={"evaluation_file": evaluation})
engine = store.connect(settings.store)

# %% [markdown]
# ## The fixed evaluation set
# Made once, by text hash, and never trained on. Keep the file: its content hash is its version.

# %%
if not evaluation.is_file():
    data = load_labelled(labelled, text_column, label_column, taxonomy_path=settings.taxonomy_path, crosswalk_path=walk)
    make_evaluation_set(data.texts, data.labels, evaluation_share, evaluation)
held_out = pd.read_csv(evaluation)
held_out["theme"].value_counts().rename("evaluation texts")

# %% [markdown]
# ## Training data
# The council's own labelled complaints from the store (an analyst's correction wins over the
# export's theme) on top of the public data and the taxonomy's examples, as
# `cli.py train --from-store --add-public-data` does; the council's rows weigh more, so they take
# over as they grow. With nothing labelled in the store yet: the labelled export (and examples).

# %%
own = None
if use_corrections:
    try:
        own, fingerprint = assemble_training_set(engine)
    except ValueError as err:  # nothing labelled in the store yet
        print(err)
if own is not None:
    training = {"input_path": own, "text_column": "text", "label_column": "theme", "add_public_data": True}
    print(own["theme"].value_counts().rename("council labels"))
else:
    training = {"input_path": labelled, "text_column": text_column, "label_column": label_column, "crosswalk_path": walk}

# %% [markdown]
# ## Train and register the candidate

# %%
result = train(**training, taxonomy_path=settings.taxonomy_path, register=model_name, settings=settings)
candidate = f"models:/{model_name}/{result.registered_version}"
pd.DataFrame(result.metrics["per_theme"]).T[["precision", "recall", "f1", "support"]]

# %% [markdown]
# ## Compare with the champion and promote through the gate

# %%
decision = promote(candidate, settings, evaluation, tolerance, margin, decided_by="retrain notebook")
champion_f1 = decision.champion["per_theme_f1"] if decision.champion else {}
comparison = pd.DataFrame({"candidate": decision.candidate["per_theme_f1"], "champion": pd.Series(champion_f1)})
print(f"{candidate} -> {decision.alias}: {decision.reason}")
comparison

# %% [markdown]
# ## What ran in production

# %%
store.read_alias_history(engine, model_name)[["decided_at", "version", "alias", "previous_champion", "reason"]]
