"""Learning points from Serious Incident Reviews: extract them, group the recurring ones,
and keep the groups stable as new reviews arrive.

Extraction splits a review into points by its own structure: numbered, lettered and
bulleted items, paragraphs under learning headings (Learning, Analysis, Concerns,
Recommendations, Actions), and sentences when there is no structure; boilerplate that is
not learning ("This report is being sent to...") is dropped and identifiers are redacted.

Grouping represents each point by a pretrained sentence encoder (:mod:`pipelines.encoder`,
so paraphrases meet), sends points close to a seed theme of the council's learning framework
to it, and groups the rest by average linkage at a fixed similarity: as many groups as the
reviews hold. A group spanning two or more reviews is a recurring learning point; points
that recur nowhere stay "not yet recurring" (group -1). Each group is named by its most
distinctive phrase. The grouping is saved (with every point's embedding) so that a later
run assigns new points to the existing groups (same ids and names), opens new groups only
for what recurs and fits none, and embeds only the points it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize
from spacy.lang.en.stop_words import STOP_WORDS

from pipelines.text import as_text, normalise, person_names

log = logging.getLogger(__name__)

LEARNING_HEADINGS = (
    "learning",
    "lessons",
    "analysis",
    "concern",
    "recommendation",
    "action",
    "finding",
    "what went wrong",
    "areas for improvement",
    "improvement",
)
OTHER_HEADINGS = (
    "background",
    "circumstances",
    "introduction",
    "investigation",
    "inquest",
    "chronology",
    "summary",
    "record of inquest",
    "terms of reference",
    "methodology",
)

# List markers: (1) 1. 1) a) (a) a. i. (iv) - • * – ▪ ·
_MARKER = re.compile(
    r"^\s*(?P<marker>"
    r"\(?\d{1,2}(?:\.\d{1,2})*[.)]"  # 1.  1)  (1)  5.1.
    r"|\d{1,2}(?:\.\d{1,2})+(?=\s)"  # 5.1
    r"|\d{1,2}(?=\s+[A-Z])"  # a bare number before a capital: "1 That the..."
    r"|\(?[a-z][.)]|\([a-z]\)"  # a)  (a)  a.
    r"|\(?(?:i{1,3}|iv|v|vi{1,3}|ix|x)[.)]"  # i.  (iv)
    r"|[-\u2022*\u2013\u25aa\u00b7\u25cf]"  # - • * – ▪ · ●
    r")\s+(?=\S)",
    re.IGNORECASE,
)
_BOILERPLATE = re.compile(
    r"^(?:"
    r"this report is being sent to|you are under a duty to respond|your response must contain|"
    r"i have sent a copy|i am under a duty to send|i have also sent|i may also send|"
    r"in my opinion,? (?:there is a risk|action should be taken|urgent action)|"
    r"in the circumstances,? it is my statutory duty|it is my statutory duty|"
    r"the matters? of concern (?:is|are) as follows|the matters? giving rise to concern|"
    r"during the course of the (?:inquest|investigation),? the evidence revealed|"
    r"the evidence revealed matters giving rise to concern|"
    r"i am concerned as follows|my concerns are as follows|the concerns are as follows|"
    r"(?:please )?(?:note|dated?|signed)\b|coroner\b.{0,40}$"
    r")",
    re.IGNORECASE,
)
MIN_POINT_CHARS = 25
LONG_PARAGRAPH_CHARS = 600


@dataclass(frozen=True)
class Block:
    text: str
    marker: str
    section: str


def _is_standalone_heading(paragraph: str) -> bool:
    """A paragraph of one short line with no closing punctuation: a heading such as an
    addressee ("Whittington Hospital Trust") or a topic ("Agreement of a care plan")."""
    line = paragraph.strip()
    return (
        "\n" not in line
        and 0 < len(line.split()) <= 15
        and line[-1] not in ".?!;,:"
        and not line[0].islower()
        and not _MARKER.match(line)
    )


def _is_heading(line: str) -> str | None:
    """The heading's name if ``line`` is a heading (short, no full stop, known word), else None."""
    stripped = re.sub(r"^\s*(?:\d{1,2}[.)]?|[A-Z][.)])?\s*", "", line).strip().rstrip(":").strip()
    if not stripped or len(stripped) > 60 or stripped.endswith(".") or len(stripped.split()) > 7:
        return None
    lowered = stripped.lower()
    if any(h in lowered for h in LEARNING_HEADINGS + OTHER_HEADINGS):
        return lowered
    return None


def _is_learning_section(section: str) -> bool:
    return any(h in section for h in LEARNING_HEADINGS)


def split_blocks(text: str) -> list[Block]:
    """Paragraphs and list items, in order, each with its marker and the heading above it."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks: list[Block] = []
    section = ""
    for paragraph in re.split(r"\n\s*\n", text):
        if _is_standalone_heading(paragraph) and _is_heading(paragraph) is None:
            section = normalise(paragraph).lower()
            continue
        current: list[str] = []
        marker = ""
        for line in paragraph.split("\n"):
            if not line.strip():
                continue
            heading = _is_heading(line)
            if heading is not None and (not _MARKER.match(line) or len(heading.split()) <= 4):
                if current:
                    blocks.append(Block(" ".join(current), marker, section))
                    current, marker = [], ""
                section = heading
                continue
            match = _MARKER.match(line)
            if match:
                if current:
                    blocks.append(Block(" ".join(current), marker, section))
                current, marker = [line[match.end() :].strip()], match.group("marker")
            else:
                current.append(line.strip())
        if current:
            blocks.append(Block(" ".join(current), marker, section))
    return blocks


def extract_points(text: str) -> list[dict]:
    """Learning points of one review: ``point_text`` (not yet redacted), ``position``, ``section``, ``marker``.

    Under learning headings only, when the review has them; boilerplate and lead-ins
    ("The analysis was:") dropped; sentences when the review is one unstructured paragraph.
    """
    blocks = split_blocks(as_text(text))
    if any(_is_learning_section(b.section) for b in blocks):
        blocks = [b for b in blocks if _is_learning_section(b.section)]
    listed = any(b.marker for b in blocks)
    kept: list[Block] = []
    for i, block in enumerate(blocks):
        body = normalise(block.text)
        if len(body) < MIN_POINT_CHARS or _BOILERPLATE.match(body):
            continue
        following_is_item = i + 1 < len(blocks) and blocks[i + 1].marker
        if body.endswith(":") and following_is_item:
            continue  # a lead-in to the list that follows, not a point itself
        if listed and not block.marker:
            # In a review written as a list, an unmarked paragraph before the first item is
            # background, and one after an item (in the same section) continues that item.
            if kept and kept[-1].marker and kept[-1].section == block.section:
                kept[-1] = Block(f"{kept[-1].text} {body}", kept[-1].marker, kept[-1].section)
            continue
        kept.append(Block(body, block.marker, block.section))
    if len(kept) == 1 and not kept[0].marker and len(kept[0].text) > LONG_PARAGRAPH_CHARS:
        kept = [Block(s, "", kept[0].section) for s in _sentences(kept[0].text) if len(s) >= MIN_POINT_CHARS]
    return [
        {"point_text": b.text, "position": n, "section": b.section, "marker": b.marker}
        for n, b in enumerate(kept, start=1)
    ]


def _sentences(text: str) -> list[str]:
    from pipelines.text import make_nlp

    nlp = make_nlp(sentences=True)
    return [s.text.strip() for s in nlp(text).sents]


# -- grouping ----------------------------------------------------------------------------
POINT_COLUMNS = ["report_id", "position", "section", "point_text", "date", "team"]
REPRESENTATION = "minilm-passage-ward-1"
# A learning point often teaches more than one thing ("the crossing had no markings and the
# police did not share the collision history"), so its sentences (passages) are grouped, and a
# point belongs to every group one of its passages is in. Measured on the coroners' reports
# (benchmarks/learning_quality.py) passages recover the analysts' themes better than whole
# points (adjusted 0.22 against 0.16). Shorter sentences than this stay with their neighbour.
MIN_PASSAGE_CHARS = 20
# Passages are compared after removing what all of them share (the mean of the passages first
# grouped: every review is "about" the same kind of failing), so the similarity measures what
# distinguishes them. Ward linkage merges clusters while the merge adds little spread, up to
# WARD_DISTANCE (a property of the encoder's unit vectors, chosen on the development file: the
# number of groups follows from it and the data); a few rounds then move each passage to the
# centre it is nearest (spherical k-means from the linkage's clusters).
WARD_DISTANCE = 2.4
REFINE_ROUNDS = 10
MEMBER_SIMILARITY = 0.25  # the least similarity to its cluster's centre a passage may have to stay in it
# A passage joins a seed theme when it is this close to the theme's description or examples.
SEED_SIMILARITY = 0.35
# Linkage holds every pairwise distance: beyond this many passages at once, the rest are
# assigned to the groups found and their leftovers grouped in further rounds.
LINKAGE_POINTS = 8000
# The lowest share of members' similarity to their group's centre a new passage must reach
# to join the group (a quantile over all fitted members).
JOIN_QUANTILE = 0.05
# ... and when nothing has recurred yet to measure it on: about what it is on the coroners'
# reports (0.36 on both files at WARD_DISTANCE).
JOIN_SIMILARITY = 0.36
# A single point is all it shares with itself: no offset below two points. (With a few
# points from one service the offset is their shared topic, which is what it should remove.)
MIN_OFFSET_POINTS = 2
MIN_REVIEWS = 2  # a group is a recurring learning point when it spans this many reviews
NOT_RECURRING = -1


def point_key(frame: pd.DataFrame) -> pd.Series:
    """A point's (or passage's) identity across runs: its review, position, passage and text."""
    raw = frame["report_id"].astype(str) + "\x1f" + frame["position"].astype(str) + "\x1f" + frame["point_text"]
    if "passage" in frame:
        raw = raw + "\x1f" + frame["passage"].astype(str)
    return pd.Series(pd.util.hash_array(raw.to_numpy(dtype=object)).astype("uint64").astype(str), index=frame.index)


def text_keys(texts: list[str]) -> list[str]:
    """A text's key in the embedding cache (identical texts share an embedding)."""
    return [hashlib.sha1(t.encode("utf-8")).hexdigest()[:20] for t in texts]


def passages(points: pd.DataFrame) -> pd.DataFrame:
    """The units that are grouped: one row per sentence of each point (a sentence shorter than
    MIN_PASSAGE_CHARS stays with the one before it), with the point's columns, ``point`` (the
    whole point), ``passage`` (1, 2, ...) and ``point_text`` the sentence."""
    from pipelines.text import make_nlp

    nlp = make_nlp(sentences=True)
    texts = points["point_text"].tolist()
    rows, numbers, parts = [], [], []
    for i, doc in enumerate(nlp.pipe(texts, batch_size=256, disable=["identifier_finder"])):
        kept: list[str] = []
        for sentence in (s.text.strip() for s in doc.sents):
            if kept and len(sentence) < MIN_PASSAGE_CHARS:
                kept[-1] = f"{kept[-1]} {sentence}"
            elif sentence:
                kept.append(sentence)
        if len(kept) > 1 and len(kept[0]) < MIN_PASSAGE_CHARS:
            first = kept.pop(0)
            kept[0] = f"{first} {kept[0]}"
        kept = kept or [texts[i]]
        rows += [i] * len(kept)
        numbers += range(1, len(kept) + 1)
        parts += kept
    units = points.iloc[rows].reset_index(drop=True)
    return units.assign(point=units["point_text"], passage=numbers, point_text=parts)


def point_rows(units: pd.DataFrame, assigned: np.ndarray, grouping: Grouping) -> pd.DataFrame:
    """One row per learning point and group it belongs to (a point whose passages recur
    nowhere: one row, group -1), with ``passage_text``, the passage that put it there (the one
    nearest the group's centre)."""
    labels = dict(zip(grouping.group_ids, grouping.labels))
    index = {g: i for i, g in enumerate(grouping.group_ids)}
    X = grouping.cached(units["point_text"].tolist())
    closeness = np.full(len(units), -np.inf)
    grouped = np.flatnonzero(assigned >= 0)
    if len(grouped):
        centres = grouping.centroids[[index[g] for g in assigned[grouped]]]
        closeness[grouped] = (X[grouped] * centres).sum(axis=1)
    frame = units.assign(group_id=assigned.astype(int), _closeness=closeness, passage_text=units["point_text"])
    frame = frame.sort_values(["report_id", "position", "group_id", "_closeness"], ascending=[True, True, True, False])
    frame = frame.drop_duplicates(["report_id", "position", "group_id"])
    in_a_group = frame.groupby(["report_id", "position"])["group_id"].transform("max") >= 0
    frame = frame[(frame["group_id"] >= 0) | ~in_a_group]
    frame = frame.sort_values(["report_id", "position", "group_id"], kind="stable").reset_index(drop=True)
    return frame.assign(
        point_text=frame["point"],
        group_label=[labels.get(g, "") for g in frame["group_id"]],
        recurring=frame["group_id"] >= 0,
    ).drop(columns=["point", "passage", "_closeness"])


@dataclass
class Grouping:
    """Everything a later run needs to put new points into the same groups: the encoder's
    record, the groups' centres and names, every point's group and every text's embedding."""

    encoder: dict  # name, revision, sha256 of the weights the embeddings come from
    offset: np.ndarray  # what every point shares, removed before comparing them
    centroids: np.ndarray
    group_ids: list[int]
    labels: list[str]
    assign_threshold: float
    next_id: int
    assignments: dict[str, int] = field(default_factory=dict)  # point key -> group id (-1: not yet recurring)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # text key -> unit vector
    seeds: list[str] = field(default_factory=list)  # names of the seed themes, the first groups
    random_state: int = 0

    def embed(self, texts: list[str], encoder, progress: bool = False) -> np.ndarray:
        """Unit vectors of ``texts``: from the cache when seen before, else from ``encoder``
        (whose record must be the one the grouping was made with)."""
        if encoder.info != self.encoder:
            raise EncoderMismatch(
                f"the saved grouping was made with encoder {self.encoder.get('name')} "
                f"{self.encoder.get('revision')}; this one is {encoder.info.get('name')} "
                f"{encoder.info.get('revision')}: regroup from scratch (--fresh) to change encoder"
            )
        keys = text_keys(texts)
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.embeddings}.items())
        if missing:
            vectors = encoder.encode([t for _, t in missing], progress=progress)
            self.embeddings.update({k: v for (k, _), v in zip(missing, vectors)})
        return self.cached(texts)

    def cached(self, texts: list[str]) -> np.ndarray:
        """Vectors of texts already embedded (every point fitted or assigned is), less the offset."""
        if not texts:
            return np.zeros((0, len(self.offset)))
        return self.centred(np.vstack([self.embeddings[k] for k in text_keys(texts)]))

    def centred(self, vectors: np.ndarray) -> np.ndarray:
        return normalize(vectors.astype(np.float64) - self.offset)

    # -- persistence (.npz for arrays, JSON for the rest; no pickles) ------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.embeddings)
        vectors = np.vstack([self.embeddings[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)
        np.savez(
            folder / "embeddings.npz",
            keys=np.asarray(keys, dtype="U20"),
            vectors=vectors.astype(np.float32),
            centroids=self.centroids,
            offset=self.offset,
        )
        state = {
            "representation": REPRESENTATION,
            "encoder": self.encoder,
            "group_ids": self.group_ids,
            "labels": self.labels,
            "assign_threshold": self.assign_threshold,
            "next_id": self.next_id,
            "assignments": self.assignments,
            "seeds": self.seeds,
            "random_state": self.random_state,
        }
        (folder / "groups.json").write_text(json.dumps(state, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: Path) -> Grouping:
        state = json.loads((folder / "groups.json").read_text())
        if state.get("representation") != REPRESENTATION:
            raise OutdatedGrouping(
                int(state.get("next_id", 0)),
                f"{folder}: this grouping was saved by an earlier version with another representation; "
                "`cli.py learning` and the nightly run set it aside and regroup, with new group ids",
            )
        with np.load(folder / "embeddings.npz", allow_pickle=False) as arrays:
            keys, vectors, centroids, offset = (arrays[k] for k in ("keys", "vectors", "centroids", "offset"))
        return cls(
            encoder=state["encoder"],
            offset=np.asarray(offset, dtype=np.float64),
            centroids=np.asarray(centroids, dtype=np.float64),
            group_ids=[int(g) for g in state["group_ids"]],
            labels=list(state["labels"]),
            assign_threshold=float(state["assign_threshold"]),
            next_id=int(state["next_id"]),
            assignments={k: int(v) for k, v in state["assignments"].items()},
            embeddings=dict(zip(keys.tolist(), vectors)),
            seeds=list(state.get("seeds", [])),
            random_state=int(state["random_state"]),
        )


class EncoderMismatch(ValueError):
    """A saved grouping's embeddings come from another encoder than the one given."""


class OutdatedGrouping(ValueError):
    """A saved grouping made by an earlier version's representation; ``next_id`` is the first
    group id it never used, so a regrouping can give its groups ids of their own."""

    def __init__(self, next_id: int, message: str):
        super().__init__(message)
        self.next_id = next_id


def _agglomerate(X: np.ndarray) -> np.ndarray:
    """Clusters of unit vectors: Ward linkage cut at WARD_DISTANCE, then REFINE_ROUNDS rounds
    moving each vector to the nearest cluster centre. As many clusters as the data holds,
    singletons included; the same input gives the same clusters."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(X) < 2:
        return np.zeros(len(X), dtype=int)
    labels = fcluster(linkage(X, method="ward"), t=WARD_DISTANCE, criterion="distance") - 1
    for _ in range(REFINE_ROUNDS):
        centres = np.zeros((labels.max() + 1, X.shape[1]))
        np.add.at(centres, labels, X)
        moved = (X @ normalize(centres).T).argmax(axis=1)
        if (moved == labels).all():
            break
        labels = moved
    # A passage loosely held by its cluster is left on its own (a cluster of one): linkage
    # merges small clusters cheaply, and a one-off point should not be forced into a group.
    centres = np.zeros((labels.max() + 1, X.shape[1]))
    np.add.at(centres, labels, X)
    loose = np.flatnonzero((X * normalize(centres)[labels]).sum(axis=1) < MEMBER_SIMILARITY)
    labels[loose] = labels.max() + 1 + np.arange(len(loose))
    return labels


def _recurring_clusters(X: np.ndarray, reports: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the clusters of ``X`` that span MIN_REVIEWS reviews or more, ordered by
    their first point (so the same input gives the same order)."""
    labels = _agglomerate(X)
    clusters = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(np.unique(reports[members])) >= MIN_REVIEWS:
            clusters.append(members)
    return sorted(clusters, key=lambda m: m[0])


def _centre(X: np.ndarray) -> np.ndarray:
    return normalize(X.mean(axis=0, keepdims=True))[0]


def _nearest(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centre, its similarity) for each row of X."""
    if not len(centroids) or not len(X):
        return np.full(len(X), -1), np.full(len(X), -np.inf)
    sims = X @ centroids.T
    nearest = sims.argmax(axis=1)
    return nearest, sims[np.arange(len(X)), nearest]


def _seed_vectors(seeds: list[dict], encoder, grouping: Grouping) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the seed themes' descriptions and examples (one row each, compared as
    points are), and which seed each row belongs to."""
    rows, owner = [], []
    for i, seed in enumerate(seeds):
        texts = [t for t in [seed.get("description", ""), *seed.get("examples", [])] if t]
        rows.append(encoder.encode(texts))
        owner += [i] * len(texts)
    return grouping.centred(np.vstack(rows)), np.asarray(owner)


def _to_seeds(X: np.ndarray, seeds: list[dict], encoder, grouping: Grouping) -> np.ndarray:
    """Each point's seed theme (index), or -1: the seed whose description or example is
    nearest, when it is at least SEED_SIMILARITY close."""
    if not seeds:
        return np.full(len(X), -1)
    vectors, owner = _seed_vectors(seeds, encoder, grouping)
    sims = X @ vectors.T
    best = sims.argmax(axis=1)
    return np.where(sims[np.arange(len(X)), best] >= SEED_SIMILARITY, owner[best], -1)


def _open_groups(
    grouping: Grouping,
    X: np.ndarray,
    reports: np.ndarray,
    pool: np.ndarray,
    result: np.ndarray,
    new: np.ndarray | None = None,
) -> list[int]:
    """Group the points in ``pool`` (indices into X) among themselves, LINKAGE_POINTS at a
    time: clusters that recur become new groups (new ids) and, round by round, the rest of the
    pool joins them when close enough. With ``new`` (a mask over X), only clusters holding a
    new point open: earlier points that did not recur alone still do not. Writes the group
    ids into ``result``; returns the ids opened."""
    pool = np.asarray(pool, dtype=int)
    opened: list[int] = []
    while len(pool):
        batch, pool = pool[:LINKAGE_POINTS], pool[LINKAGE_POINTS:]
        round_ids = []
        for members in _recurring_clusters(X[batch], reports[batch]):
            if new is not None and not new[batch[members]].any():
                continue
            gid = grouping.next_id
            grouping.next_id += 1
            grouping.group_ids.append(gid)
            grouping.centroids = np.vstack([grouping.centroids, _centre(X[batch[members]])[None, :]])
            result[batch[members]] = gid
            round_ids.append(gid)
        opened += round_ids
        if not round_ids or not len(pool):
            continue
        nearest, sims = _nearest(X[pool], grouping.centroids[-len(round_ids) :])
        joins = sims >= grouping.assign_threshold
        result[pool[joins]] = np.asarray(round_ids)[nearest[joins]]
        pool = pool[~joins]
    return opened


def _join_threshold(X: np.ndarray, result: np.ndarray, grouping: Grouping) -> float:
    """How close a new point must be to a group's centre: as close as all but the loosest
    JOIN_QUANTILE of the fitted members are to theirs."""
    grouped = np.flatnonzero(result >= 0)
    if not len(grouped):
        return JOIN_SIMILARITY
    index = {g: i for i, g in enumerate(grouping.group_ids)}
    centres = grouping.centroids[[index[g] for g in result[grouped]]]
    return float(np.quantile((X[grouped] * centres).sum(axis=1), JOIN_QUANTILE))


def fit_groups(
    points: pd.DataFrame,
    seed_themes: list[dict] | None = None,
    random_state: int = 0,
    encoder=None,
    progress: bool = False,
    embeddings: dict[str, np.ndarray] | None = None,
    first_id: int = 0,
) -> tuple[Grouping, np.ndarray]:
    """Group learning points (or passages) from scratch; returns the grouping and each row's
    group id (-1: not yet recurring). Seed themes, when given, are the first groups (ids
    ``first_id``, ``first_id`` + 1, ...). ``embeddings`` (text key -> vector, from an earlier
    grouping) spares re-embedding."""
    from pipelines.encoder import get_encoder

    encoder = encoder or get_encoder()
    seeds = seed_themes or []
    grouping = Grouping(encoder.info, np.zeros(384), np.zeros((0, 384)), [], [], 0.0, 0)
    grouping.seeds, grouping.random_state = [s["name"] for s in seeds], random_state
    grouping.embeddings = dict(embeddings or {})
    texts = points["point_text"].tolist()
    grouping.embed(texts, encoder, progress)
    raw = np.vstack([grouping.embeddings[k] for k in text_keys(texts)]).astype(np.float64)
    grouping.offset = raw.mean(axis=0) if len(raw) >= MIN_OFFSET_POINTS else np.zeros(raw.shape[1])
    X = grouping.centred(raw)
    reports = points["report_id"].astype(str).to_numpy()
    result = np.full(len(points), NOT_RECURRING)
    seeded = _to_seeds(X, seeds, encoder, grouping)
    for i, _ in enumerate(seeds):
        members = np.flatnonzero(seeded == i)
        grouping.group_ids.append(first_id + i)
        centre = _centre(X[members]) if len(members) else _centre(_seed_vectors(seeds[i : i + 1], encoder, grouping)[0])
        grouping.centroids = np.vstack([grouping.centroids, centre[None, :]])
        result[members] = first_id + i
    grouping.next_id = first_id + len(seeds)
    # Points in a fixed pseudo-random order, so a large input's first linkage batch is a fair
    # sample of it; the same input and seed give the same order.
    free = np.flatnonzero(seeded < 0)
    free = free[np.random.default_rng(random_state).permutation(len(free))]
    # The first batch sets how close a later point must be to join a group; then the rest
    # join the groups they fit, and what fits none is grouped in further rounds.
    _open_groups(grouping, X, reports, free[:LINKAGE_POINTS], result)
    grouping.assign_threshold = _join_threshold(X, result, grouping)
    rest = free[LINKAGE_POINTS:]
    if len(rest):
        nearest, sims = _nearest(X[rest], grouping.centroids)
        fits = sims >= grouping.assign_threshold
        result[rest[fits]] = np.asarray(grouping.group_ids)[nearest[fits]]
        _open_groups(grouping, X, reports, rest[~fits], result)
    names = _name_groups(texts, result, grouping.group_ids[len(seeds) :], set(grouping.seeds))
    grouping.labels = grouping.seeds + names
    grouping.assignments = dict(zip(point_key(points), map(int, result)))
    return grouping, result


def assign_groups(grouping: Grouping, points: pd.DataFrame, encoder=None) -> tuple[Grouping, np.ndarray]:
    """Put points into an existing grouping: known points keep their group; new ones join the
    nearest group they fit; the rest, with the points not yet recurring, may open new groups
    (new ids) when they recur across reviews. Existing groups keep their ids and names."""
    from pipelines.encoder import get_encoder

    encoder = encoder or get_encoder()
    keys = point_key(points).tolist()
    result = np.array([grouping.assignments.get(k, -2) for k in keys])
    new = np.flatnonzero(result == -2)
    if len(new):
        texts = points["point_text"].tolist()
        X = grouping.embed(texts, encoder)
        nearest, sims = _nearest(X[new], grouping.centroids)
        fits = sims >= grouping.assign_threshold
        result[new[fits]] = np.asarray(grouping.group_ids)[nearest[fits]]
        result[new[~fits]] = NOT_RECURRING
        waiting = np.flatnonzero(result == NOT_RECURRING)
        is_new = np.zeros(len(points), dtype=bool)
        is_new[new] = True
        reports = points["report_id"].astype(str).to_numpy()
        opened = _open_groups(grouping, X, reports, waiting, result, is_new)
        grouping.labels += _name_groups(texts, result, opened, set(grouping.labels))
        grouping.assignments.update(zip(keys, map(int, result)))
    return grouping, result


# Words of the review process and of the organisations themselves: true of every review,
# so no help in a group's name.
GENERIC_WORDS = {
    "trust", "trusts", "council", "councils", "nhs", "service", "services", "report", "reports",
    "coroner", "coroners", "inquest", "inquests", "evidence", "concern", "concerns", "concerned",
    "matter", "matters", "death", "deaths", "deceased", "court", "prevention", "future", "redacted",
    "name", "action", "actions", "organisation", "organisations", "department", "secretary", "state",
    "regulation", "regulations", "paragraph", "opinion", "heard", "mr", "mrs", "ms", "dr", "miss",
    "review", "reviews", "learning", "lesson", "lessons", "issue", "issues", "date", "time",
}  # fmt: skip
LABEL_WORDS = (2, 3)


def _phrase_counts(texts: list[str]):
    """(point x phrase counts, phrases): word pairs and triples that neither start nor end with
    a stop word and hold no generic word, in two or more points."""
    counter = CountVectorizer(ngram_range=LABEL_WORDS, token_pattern=r"(?u)\b[a-z][a-z'-]+\b", min_df=2)
    try:
        counts = counter.fit_transform(texts)
    except ValueError:  # too few points to share a phrase
        return sp.csr_matrix((len(texts), 0)), np.array([], dtype=object)
    phrases = counter.get_feature_names_out()
    keep = np.array(
        [
            w[0] not in STOP_WORDS and w[-1] not in STOP_WORDS and not GENERIC_WORDS.intersection(w)
            for w in (p.split() for p in phrases)
        ],
        dtype=bool,
    )
    return counts[:, keep].tocsc().tocsr(), phrases[keep]


def _name_groups(texts: list[str], result: np.ndarray, ids: list[int], taken: set[str]) -> list[str]:
    """A short readable name for each group in ``ids``: its most distinctive phrase of 2-3
    words (class-based TF-IDF against all the points), preferring phrases two of its points
    share; each name used once."""
    if not ids:
        return []
    counts, phrases = _phrase_counts([t.lower() for t in texts])
    present = (counts > 0).astype(np.float64)
    overall = np.asarray(present.sum(axis=0)).ravel() + 1
    names, taken = [], set(taken)
    for gid in ids:
        members = np.flatnonzero(result == gid)
        in_group = np.asarray(present[members].sum(axis=0)).ravel()
        score = (in_group / max(1, len(members))) * np.log(1 + len(texts) / overall) * (1 + (in_group >= 2))
        order = np.argsort(-score, kind="stable")
        best = next((j for j in order[:50] if in_group[j] > 0 and phrases[j] not in taken), None)
        name = _whole_phrase(phrases, in_group, best, taken) if best is not None else None
        name = name or _word_pair(texts, members, taken) or f"group {gid}"
        taken.add(name)
        names.append(name)
    return names


def _whole_phrase(phrases: np.ndarray, in_group: np.ndarray, best: int, taken: set[str]) -> str:
    """The longer phrase holding the chosen one when the group uses it nearly as often:
    "community mental health" rather than "community mental"."""
    chosen = phrases[best]
    longer = [
        j
        for j in np.flatnonzero(in_group >= 0.8 * in_group[best])
        if len(phrases[j]) > len(chosen) and f" {chosen} " in f" {phrases[j]} " and phrases[j] not in taken
    ]
    return phrases[max(longer, key=lambda j: (in_group[j], phrases[j]))] if longer else chosen


def _word_pair(texts: list[str], members: np.ndarray, taken: set[str]) -> str | None:
    """The two commonest non-generic words of the members, "a, b": a name when no phrase recurs."""
    words = pd.Series(
        [w for i in members for w in re.findall(r"[a-z][a-z'-]+", texts[i].lower())
         if w not in STOP_WORDS and w not in GENERIC_WORDS and len(w) > 2]
    )  # fmt: skip
    top = words.value_counts(sort=True).index[:2].tolist() if len(words) else []
    name = ", ".join(sorted(top)) if len(top) == 2 else None
    return name if name not in taken else None


# -- reading reviews ---------------------------------------------------------------------
DOCUMENT_SUFFIXES = {".txt", ".md", ".docx", ".pdf"}
MAX_REVIEW_CHARS = 500_000


class ReviewError(ValueError):
    """One review cannot be read; the message names the file. Other reviews carry on."""


def _docx_text(path: Path) -> tuple[str, dict]:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as err:
        raise ReviewError(f"{path}: not a readable .docx file ({type(err).__name__})") from None
    lines = []
    for paragraph in document.paragraphs:
        text = paragraph.text.strip()
        if not text:
            lines.append("")
            continue
        # Word keeps list numbering and bullets out of the text; put a marker back so the
        # item is split like any other list.
        numbered = paragraph._p.pPr is not None and paragraph._p.pPr.numPr is not None
        style = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        lines.append(f"- {text}" if numbered or style.startswith("list") else text)
        if not (numbered or style.startswith("list")):
            lines.append("")
    props = document.core_properties
    meta = {
        "date": props.created.date().isoformat() if props.created else "",
        "team": props.category or props.subject or "",
    }
    return "\n".join(lines), meta


def _pdf_text(path: Path) -> tuple[str, dict]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except (PdfReadError, OSError, ValueError) as err:
        raise ReviewError(f"{path}: not a readable PDF ({type(err).__name__})") from None
    if not text.strip():
        raise ReviewError(f"{path}: the PDF has no text layer (a scan?); run it through OCR or supply the text")
    info = reader.metadata or {}
    created = getattr(info, "creation_date", None)
    return text, {"date": created.date().isoformat() if created else "", "team": str(info.get("/Subject", "") or "")}


def read_review_document(path: Path) -> dict:
    """One review document as ``{"report_id", "text", "date", "team"}`` (metadata from file properties)."""
    suffix = path.suffix.lower()
    if suffix == ".docx":
        text, meta = _docx_text(path)
    elif suffix == ".pdf":
        text, meta = _pdf_text(path)
    else:
        from pipelines.tables import detect_encoding

        text, meta = path.read_text(encoding=detect_encoding(path), errors="replace"), {"date": "", "team": ""}
    if not text.strip():
        raise ReviewError(f"{path}: the document is empty")
    if len(text) > MAX_REVIEW_CHARS:
        raise ReviewError(
            f"{path}: {len(text):,} characters of text, more than a review has ({MAX_REVIEW_CHARS:,}); is it the right file?"
        )
    return {"report_id": path.stem, "text": text, **meta}


def read_reviews(
    source: Path,
    id_column: str = "id",
    text_column: str = "concerns",
    date_column: str = "date",
    team_column: str = "team",
    name_column: str | None = None,
    metadata: Path | None = None,
) -> tuple[pd.DataFrame, list[dict]]:
    """Reviews as a frame (report_id, text, date, team, names) and the problems met, one per bad file or row."""
    from pipelines.tables import read_table

    problems: list[dict] = []
    if source.is_dir():
        rows = []
        for path in sorted(p for p in source.iterdir() if p.suffix.lower() in DOCUMENT_SUFFIXES):
            try:
                rows.append(read_review_document(path))
            except ReviewError as err:
                problems.append({"source": str(path), "reason": str(err)})
        frame = pd.DataFrame(rows, columns=["report_id", "text", "date", "team"])
        sidecar = metadata or next((p for p in (source / "reviews.csv", source / "metadata.csv") if p.exists()), None)
        if sidecar is not None:
            meta = read_table(sidecar, [id_column])
            meta = meta.rename(columns={id_column: "report_id", date_column: "date_meta", team_column: "team_meta"})
            meta["report_id"] = meta["report_id"].map(lambda v: Path(v).stem)
            frame = frame.merge(meta, on="report_id", how="left")
            for col in ("date", "team"):
                if f"{col}_meta" in frame:
                    frame[col] = (
                        frame[f"{col}_meta"].fillna("").where(frame[f"{col}_meta"].fillna("") != "", frame[col])
                    )
        frame["names"] = [[] for _ in range(len(frame))]
        if name_column and sidecar is not None and name_column in meta.columns:
            frame["names"] = frame[name_column].map(person_names)
    else:
        table = read_table(source, [id_column, text_column])
        frame = pd.DataFrame(
            {
                "report_id": table[id_column],
                "text": table[text_column],
                "date": table[date_column] if date_column in table else "",
                "team": table[team_column] if team_column in table else "",
                "names": table[name_column].map(person_names)
                if name_column and name_column in table
                else [[]] * len(table),
            }
        )
    frame["date"] = _iso_dates(frame, problems)
    return frame.reset_index(drop=True), problems


def _iso_dates(frame: pd.DataFrame, problems: list[dict]) -> pd.Series:
    """Review dates as YYYY-MM-DD text by the one date rule (:func:`pipelines.tables.parse_dates`);
    a date that is not one is blanked, the review kept, and the problem noted."""
    from pipelines.tables import parse_dates

    dates, bad = parse_dates(frame["date"])
    for report_id, value in zip(frame.loc[bad, "report_id"], frame.loc[bad, "date"]):
        problems.append(
            {
                "source": str(report_id),
                "reason": f"{report_id}: date '{value}' is not a date (expected YYYY-MM-DD or DD/MM/YYYY); the review is used without it",
            }
        )
    return pd.Series([d.isoformat() if pd.notna(d) else "" for d in dates], index=frame.index, dtype=object)


def extract_review_points(reviews: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """One row per learning point (redacted), with its review's id, date and team; and the
    reviews that gave none."""
    from pipelines.text import redact, redact_names

    rows, problems = [], []
    for review in reviews.itertuples(index=False):
        points = extract_points(review.text)
        if not points:
            problems.append(
                {
                    "source": str(review.report_id),
                    "reason": f"{review.report_id}: no learning points found (no list items, learning section or sentences)",
                }
            )
        for p in points:
            rows.append(
                {
                    "report_id": str(review.report_id),
                    "date": review.date,
                    "team": review.team,
                    "names": review.names,
                    **p,
                }
            )
    frame = pd.DataFrame(
        rows, columns=["report_id", "date", "team", "names", "point_text", "position", "section", "marker"]
    )
    # Names of the review's subject first (they are often bare first names), then identifiers.
    named = redact_names(frame["point_text"].tolist(), frame["names"].tolist())
    frame["point_text"] = redact(named)
    return frame.drop(columns=["names"]), problems


# -- summaries and the command -----------------------------------------------------------
POINTS_OUTPUT = [
    "report_id",
    "position",
    "section",
    "point_text",
    "group_id",
    "group_label",
    "recurring",
    "passage_text",
    "date",
    "team",
    "marker",
]
GROUPS_OUTPUT = [
    "group_id",
    "group_label",
    "n_points",
    "n_reviews",
    "teams",
    "first_seen",
    "last_seen",
    "recurring",
    "representative_point",
    "representative_points",
]


def summarise_groups(units: pd.DataFrame, grouping: Grouping, n_representative: int = 3) -> pd.DataFrame:
    """One row per group with passages (``units`` with ``group_id``): counts of points and
    reviews, teams, first and last seen, recurring, the passage nearest the group's centre and
    the nearest few from distinct reviews."""
    grouped = units[units["group_id"] >= 0]
    if grouped.empty:
        return pd.DataFrame(columns=GROUPS_OUTPUT)
    X = grouping.cached(grouped["point_text"].tolist())
    index = {g: i for i, g in enumerate(grouping.group_ids)}
    closeness = (X * grouping.centroids[[index[g] for g in grouped["group_id"]]]).sum(axis=1)
    grouped = grouped.assign(_closeness=closeness)
    rows = []
    for gid, members in grouped.groupby("group_id", sort=True):
        ranked = members.sort_values(["_closeness", "report_id", "position"], ascending=[False, True, True])
        representative = ranked.drop_duplicates("report_id").head(n_representative)
        dates = members["date"][members["date"] != ""]
        rows.append(
            {
                "group_id": int(gid),
                "group_label": grouping.labels[index[gid]],
                "n_points": len(members.drop_duplicates(["report_id", "position"])),
                "n_reviews": members["report_id"].nunique(),
                "teams": "; ".join(sorted({t for t in members["team"] if t})),
                "first_seen": dates.min() if len(dates) else "",
                "last_seen": dates.max() if len(dates) else "",
                "recurring": bool(members["report_id"].nunique() >= 2),
                "representative_point": ranked["point_text"].iloc[0],
                "representative_points": " | ".join(representative["point_text"]),
            }
        )
    return pd.DataFrame(rows, columns=GROUPS_OUTPUT).sort_values(
        ["recurring", "n_reviews", "group_id"], ascending=[False, False, True]
    )


def load_seed_themes(path: Path) -> list[dict]:
    """A learning framework from YAML: a list (or ``themes:``) of ``{name, description,
    examples: [point, ...]}``; a theme needs a name and a description or examples."""
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    themes = raw.get("themes", raw) if isinstance(raw, dict) else raw
    out = []
    for i, theme in enumerate(themes, start=1):
        if (
            not isinstance(theme, dict)
            or not theme.get("name")
            or not (theme.get("description") or theme.get("examples"))
        ):
            raise ValueError(f"{path}: theme {i} needs a 'name' and a 'description' or a list of 'examples'")
        out.append(
            {
                "name": str(theme["name"]),
                "description": str(theme.get("description") or ""),
                "examples": [str(e) for e in theme.get("examples") or []],
            }
        )
    return out


@dataclass
class LearningSummary:
    points: int
    groups: int
    recurring_groups: int
    ungrouped: int
    problems: list[dict]
    points_path: Path
    groups_path: Path | None

    @property
    def exit_code(self) -> int:
        return 3 if self.problems else 0


def group_reviews(
    source: Path,
    grouping_dir: Path | None = None,
    seed_themes: Path | None = None,
    id_column: str = "id",
    text_column: str = "concerns",
    date_column: str = "date",
    team_column: str = "team",
    name_column: str | None = None,
    random_state: int = 0,
    encoder_dir: Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(points, groups, problems): extract learning points from reviews and group them, reusing
    (and updating) the saved grouping in ``grouping_dir`` when there is one.

    The encoder is checked first: without verified weights nothing is read or written."""
    from pipelines.encoder import get_encoder
    from pipelines.tables import InputError

    encoder = get_encoder(encoder_dir)
    reviews, problems = read_reviews(source, id_column, text_column, date_column, team_column, name_column)
    points, empty = extract_review_points(reviews)
    problems += empty
    if points.empty:
        raise InputError(f"{source}: no learning points found in any review")
    units = passages(points)
    saved, first_id = None, 0
    if grouping_dir is not None and (grouping_dir / "groups.json").exists():
        try:
            saved = Grouping.load(grouping_dir)
        except OutdatedGrouping as old:
            # After an upgrade that changed the representation: keep the old grouping beside
            # the new one and regroup, with ids the old groups never had.
            first_id = old.next_id
            aside = grouping_dir.with_name(f"{grouping_dir.name}.before-{REPRESENTATION}")
            shutil.rmtree(aside, ignore_errors=True)
            grouping_dir.rename(aside)
            log.warning("saved grouping is from an earlier version; regrouping", extra={"fields": {"kept": str(aside)}})
    if saved is not None:
        grouping, assigned = assign_groups(saved, units, encoder)
    else:
        seeds = load_seed_themes(seed_themes) if seed_themes else None
        grouping, assigned = fit_groups(units, seeds, random_state, encoder, len(units) > 2000, first_id=first_id)
    if grouping_dir is not None:
        grouping.save(grouping_dir)
    for problem in problems:
        log.warning(
            "review skipped or empty",
            extra={"fields": {"source": problem["source"], "reason": problem["reason"][:200]}},
        )
    groups = summarise_groups(units.assign(group_id=assigned.astype(int)), grouping)
    return point_rows(units, assigned, grouping)[POINTS_OUTPUT], groups, problems


def write_learning_files(
    points: pd.DataFrame, groups: pd.DataFrame, problems: list[dict], points_path: Path, groups_path: Path | None
) -> LearningSummary:
    from pipelines.tables import TableWriter

    writer = TableWriter(points_path)
    writer.write(points[POINTS_OUTPUT])
    writer.close()
    if groups_path is not None:
        out = TableWriter(groups_path)
        out.write(groups)
        out.close()
    return LearningSummary(
        len(points.drop_duplicates(["report_id", "position"])),
        len(groups),
        int(groups["recurring"].sum()) if len(groups) else 0,
        int((points["group_id"] == -1).sum()),
        problems,
        points_path,
        groups_path,
    )


def run_learning(source: Path, points_path: Path, groups_path: Path | None = None, **grouping) -> LearningSummary:
    """Extract learning points from reviews, group them (reusing a saved grouping when there is
    one) and write the points and groups files; ``grouping`` takes :func:`group_reviews`'s options.

    Example: ``run_learning(Path("reviews/"), Path("points.csv"), Path("groups.csv"), grouping_dir=Path("g"))``
    """
    points, groups, problems = group_reviews(source, **grouping)
    return write_learning_files(points, groups, problems, points_path, groups_path)


def log_grouping(grouping_dir: Path, summary: LearningSummary, settings) -> str:
    """Record the grouping as an MLflow run: counts as metrics, the encoder's name, revision and
    hashes as parameters, the saved state (group names, point hashes) as an artifact. Never
    point text, nor the embeddings (they are derived from it)."""
    from pipelines import tracking

    state = json.loads((grouping_dir / "groups.json").read_text())
    encoder = state.get("encoder", {})
    metrics = {
        "points": summary.points,
        "groups": summary.groups,
        "recurring_groups": summary.recurring_groups,
        "ungrouped": summary.ungrouped,
        "problems": len(summary.problems),
    }
    params = {
        "encoder": encoder.get("name", ""),
        "encoder_revision": encoder.get("revision", ""),
        **{f"encoder_sha256_{k}": v for k, v in encoder.get("sha256", {}).items()},
        "representation": state.get("representation", ""),
    }
    return tracking.log_grouping(settings, metrics, params, grouping_dir / "groups.json")
