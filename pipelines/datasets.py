"""Loaders for the public labelled datasets and the bundled made-up sample.

Like scikit-learn's ``fetch_*`` functions they take a data directory (default: the
settings' ``public_data`` folder), check the file's sha256, and say clearly what to do
when a file is missing. The public files are never copied into the repository.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from pipelines.config import load_settings

CHECKSUMS = {
    "nhs_fft_phase1.csv": "ac7046ed9686e6fc3355ad883a28e1c4d4498944d291799fad476de9d11a9518",
    "nhs_fft_v6_neas.csv": "ceef575ef0158bb0739e22a8fa37a5beeb640dcdb97095f3cff01cfb876f3805",
    "pfd_suicide_reports.csv": "3df877ec987a35d0aafc303615091f7827b5db8b265c84bebfa2bd99c4487f9c",
    "pfd_road_traffic_dev.csv": "35004df8d137ccaa7fb4cb7c5e0a4410532c35b8e4f1eaab25973b12abf025d7",
}
FFT_V6_FIRST_LABEL = "Not assigned"
FFT_FILE = "nhs_fft_phase1.csv"
FFT_CROSSWALK = Path("crosswalks") / "nhs_fft_phase1.yaml"  # the default crosswalk, under data_dir


class DatasetError(FileNotFoundError):
    """A public dataset is missing or is not the expected file."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_path(name: str, data_home: str | Path | None = None, verify: bool = True) -> Path:
    """Path of a public dataset file, checked against its published sha256."""
    folder = Path(data_home) if data_home else load_settings().public_data
    path = folder / name
    if not path.is_file():
        raise DatasetError(
            f"{name} not found in {folder}. Put the public datasets there or set LFF_PUBLIC_DATA_DIR "
            f"to the folder that holds them (e.g. ../shared/data)."
        )
    if verify and sha256_of(path) != CHECKSUMS[name]:
        raise DatasetError(
            f"{path} does not match the published sha256 {CHECKSUMS[name][:12]}...; is it another version?"
        )
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def fetch_fft_phase1(data_home=None, drop_empty: bool = True) -> pd.DataFrame:
    """NHS FFT phase-1 feedback: ``feedback``, ``label`` (9 themes), ``code`` (44), ``criticality``, ``organization``."""
    frame = _read(dataset_path("nhs_fft_phase1.csv", data_home))
    if drop_empty:
        frame = frame[frame["feedback"].str.strip() != ""].reset_index(drop=True)
    return frame


def fetch_fft_v6(data_home=None, drop_empty: bool = True) -> pd.DataFrame:
    """NHS FFT v6 (NEAS) feedback with ``text`` and ``labels`` (``;``-joined themes from the one-hot columns)."""
    frame = _read(dataset_path("nhs_fft_v6_neas.csv", data_home))
    label_columns = list(frame.columns[frame.columns.get_loc(FFT_V6_FIRST_LABEL) :])
    onehot = frame[label_columns].apply(pd.to_numeric, errors="coerce").fillna(0).astype(bool)
    frame = frame.assign(
        text=frame["FFT answer"],
        labels=onehot.apply(lambda row: ";".join(row.index[row.to_numpy()]), axis=1),
    )
    if drop_empty:
        frame = frame[(frame["text"].str.strip() != "") & (frame["labels"] != "")].reset_index(drop=True)
    return frame


def fetch_pfd_reports(data_home=None) -> pd.DataFrame:
    """Coroners' Prevention of Future Deaths reports after suicides: ``id``, ``date``, ``concerns``, ``family_*``."""
    return _read(dataset_path("pfd_suicide_reports.csv", data_home))


def sample_complaints_path(data_dir: str | Path | None = None) -> Path:
    """The bundled made-up sample of council complaints and compliments (demo and fast tests only)."""
    return Path(data_dir or load_settings().data_dir) / "sample" / "complaints.csv"


def fetch_pfd_reviews(data_home=None) -> pd.DataFrame:
    """The coroners' reports as reviews for :mod:`pipelines.reviews`: ``report_id``, ``text``
    (the matters of concern), ``date``, ``team`` (empty) and ``names`` (the deceased's name
    words, from "the death of ..." in the investigation, for redaction)."""
    return pfd_as_reviews(fetch_pfd_reports(data_home))


def fetch_pfd_road_traffic(data_home=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coroners' reports after road deaths, for developing the grouping: (reports, theme labels).

    Labels: one boolean column per theme (the columns between ``concerns`` and ``age``),
    indexed by the report's ``url`` (its ``id`` repeats for a few reports); silver labels, a
    guide rather than the truth."""
    pfd = _read(dataset_path("pfd_road_traffic_dev.csv", data_home))
    columns = list(pfd.columns)
    themes = columns[columns.index("concerns") + 1 : columns.index("age")]
    labels = pfd.set_index("url")[themes].apply(lambda s: s.astype(str).str.lower() == "true")
    return pfd, labels


def pfd_as_reviews(pfd: pd.DataFrame, id_column: str = "id") -> pd.DataFrame:
    """Coroners' reports as reviews: their matters of concern, date and the deceased's name words."""
    from pipelines.text import person_names

    return pd.DataFrame(
        {
            "report_id": pfd[id_column],
            "text": pfd["concerns"],
            "date": pfd["date"],
            "team": "",
            "names": pfd["investigation"].map(person_names),
        }
    )
