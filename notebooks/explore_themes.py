# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Explore the themes
#
# Themes over time, where the model and people disagree, and examples of disagreement, from
# the results store. With `demo = True` it first fills a fresh store from real public feedback
# (NHS Friends and Family Test comments, their human themes mapped by the crosswalk, with
# made-up dates), so the notebook runs anywhere; point `store_url` at the council's store instead.

# %% tags=["parameters"]
state_dir = None  # None: the settings' default
store_url = None  # None: the settings' results store
demo = True  # fill a fresh store from public data first
public_data_dir = "../shared/data"
demo_rows = 2000
seed = 0

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from pipelines import store
from pipelines.config import PROJECT_ROOT, Settings
from pipelines.reports import reporting_theme

settings = Settings(**({"state_dir": Path(state_dir)} if state_dir else {}))
if store_url:
    settings = settings.model_copy(update={"store_url": store_url})

# %%
if demo:
    from pipelines.datasets import fetch_fft_phase1
    from pipelines.nightly import run_nightly
    from pipelines.taxonomy import Crosswalk, Taxonomy

    public = Path(public_data_dir) if Path(public_data_dir).is_absolute() else PROJECT_ROOT / public_data_dir
    fft = fetch_fft_phase1(public).sample(demo_rows, random_state=seed)
    walk = Crosswalk.from_file(PROJECT_ROOT / "data" / "crosswalks" / "nhs_fft_phase1.yaml")
    themed = walk.apply(fft, Taxonomy.from_file(settings.taxonomy_path), label_column="theme")
    drop = settings.state / "explore" / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    days = pd.Series(range(len(themed))) % 365
    pd.DataFrame(
        {
            "complaint_id": [f"FFT-{i}" for i in themed["row_index"]],
            "received_date": (pd.Timestamp("2025-01-01") + pd.to_timedelta(days, unit="D")).dt.strftime("%Y-%m-%d"),
            "service": themed["organization"].to_numpy(),
            "text": themed["feedback"].to_numpy(),
            "theme": themed["theme"].to_numpy(),
        }
    ).to_csv(drop / "fft-demo.csv", index=False)
    settings = settings.model_copy(
        update={
            "drop_folder": drop,
            "store_url": f"sqlite:///{settings.state / 'explore' / 'results.db'}",
            "output_folder": settings.state / "explore" / "outputs",
        }
    )
    summary = run_nightly(settings, progress=False)
    print(summary.counts)

# %%
tagged = store.current_taggings(store.connect(settings.store))
tagged["reported"] = reporting_theme(tagged)
tagged["month"] = pd.to_datetime(tagged["received_date"]).dt.to_period("M").astype(str)
print(f"{len(tagged)} complaints and compliments in the store")

# %% [markdown]
# ## Themes over time

# %%
monthly = tagged.groupby(["month", "reported"]).size().unstack(fill_value=0)
ax = monthly.plot(marker="o", figsize=(9, 4), title="Feedback by theme and month")
ax.set_ylabel("received")
plt.show()
monthly

# %% [markdown]
# ## Where the model and people disagree
# Rows: the theme a person gave (export or correction); columns: the model's. Shares of each row.

# %%
labelled = tagged[(tagged["human_theme"].fillna("") != "") | tagged["analyst_theme"].notna()]
person = labelled["analyst_theme"].fillna(labelled["human_theme"])
confusion = pd.crosstab(person.rename("person"), labelled["theme"].rename("model"), normalize="index").round(2)
agreement = (person == labelled["theme"]).mean()
print(f"model and people agree on {agreement:.0%} of {len(labelled)} labelled items")
confusion

# %% [markdown]
# ## Examples of disagreement (redacted text, most confident first)

# %%
disagree = labelled[person != labelled["theme"]].assign(person=person)
disagree.sort_values("theme_confidence", ascending=False).head(10)[
    ["complaint_id", "person", "theme", "theme_confidence", "evidence", "text_redacted"]
]
