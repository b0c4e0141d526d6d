"""Grouping learning points: the recurring ones across reviews, kept stable as reviews arrive.

Each point's passages (its sentences) are represented by a pretrained sentence encoder
(:mod:`pipelines.encoder`, so paraphrases meet); passages close to a seed theme of the
council's learning framework go to it, and the rest are grouped by Ward linkage with a few
rounds of refinement: as many groups as the reviews hold. A group spanning two or more
reviews is a recurring learning point; passages that recur nowhere stay "not yet recurring"
(group -1). Each group is named by its most distinctive phrase. The grouping is saved (with
every passage's embedding) so that a later run assigns new points to the existing groups
(same ids and names), opens new groups only for what recurs and fits none, and embeds only
what it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize
from spacy.lang.en.stop_words import STOP_WORDS

log = logging.getLogger(__name__)


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


# -- summaries ----------------------------------------------------------------------------
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
