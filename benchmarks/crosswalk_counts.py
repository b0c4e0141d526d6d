"""How many training rows each council theme (and sub-theme) gets from the public FFT data
through the default crosswalk, and from the taxonomy's examples.

Writes benchmarks/results/crosswalk_counts.json. Run:
    LFF_PUBLIC_DATA_DIR=../shared/data .venv/bin/python benchmarks/crosswalk_counts.py
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.config import load_settings
from pipelines.datasets import FFT_CROSSWALK, fetch_fft_phase1
from pipelines.taxonomy import Crosswalk, Taxonomy

RESULTS = Path(__file__).parent / "results" / "crosswalk_counts.json"


def main() -> None:
    settings = load_settings()
    taxonomy = Taxonomy.from_file(settings.taxonomy_path)
    crosswalk = Crosswalk.from_file(settings.data_dir / FFT_CROSSWALK)
    fft = fetch_fft_phase1(settings.public_data)
    mapped = crosswalk.apply(fft, taxonomy, label_column="theme")
    # The decided target before roll-up (a sub-theme where the crosswalk names one).
    target = crosswalk.apply(fft, taxonomy.__class__(taxonomy.name, taxonomy.version, _flat(taxonomy)), "target")
    examples = taxonomy.example_rows()
    result = {
        "fft_rows": len(fft),
        "mapped_rows": len(mapped),
        "rows_per_theme": mapped["theme"].value_counts().sort_index().to_dict(),
        "rows_per_target": target["target"].value_counts().sort_index().to_dict(),
        "example_rows_per_theme": examples["theme"].value_counts().sort_index().to_dict(),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _flat(taxonomy: Taxonomy):
    """Every theme and sub-theme as a theme of its own, to count the crosswalk's exact targets."""
    from pipelines.taxonomy import Theme

    return tuple(Theme(name, t.feedback_type, "") for t in taxonomy.themes for name in [t.name, *t.sub_themes])


if __name__ == "__main__":
    main()
