"""Learning points from Serious Incident Reviews: extract them, group the recurring ones,
and keep the groups stable as new reviews arrive.

Extraction splits a review into points by its own structure: numbered, lettered and
bulleted items, paragraphs under learning headings (Learning, Analysis, Concerns,
Recommendations, Actions), and sentences when there is no structure; boilerplate that is
not learning ("This report is being sent to...") is dropped and identifiers are redacted.

Grouping represents each point by the word vectors of its lemmas, learnt from the reviews'
own text (words used in the same contexts get near vectors, so paraphrases meet), clusters
them with the number of groups chosen by silhouette, names each
group by its most distinctive phrase, and saves the grouping so that a later run assigns
new points to the existing groups (same ids and names) and opens new groups only for what
does not fit.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.metrics import silhouette_score
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
# Word vectors: co-occurrence within WORD_WINDOW words, reduced to WORD_DIMENSIONS.
WORD_WINDOW = 5
WORD_DIMENSIONS = 100
REPRESENTATION = "ppmi-word-vectors-1"
MAX_GROUPS = 60
MIN_GROUP_POINTS = 3
SILHOUETTE_SAMPLE = 3000
UNGROUPED_SHARE = 0.05
# Words of the review process itself, common to every review whatever its learning.
GROUPING_STOP_WORDS = sorted(
    STOP_WORDS
    | {
        "redacted",
        "name",
        "inquest",
        "hear",
        "evidence",
        "coroner",
        "concern",
        "concerned",
        "death",
        "deceased",
        "die",
        "report",
        "court",
        "find",
        "matter",
        "opinion",
        "tell",
        "say",
        "state",
        "note",
        "review",
        "mr",
        "mrs",
        "ms",
        "dr",
        "ll",
        "ve",
    }
)
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


def point_key(frame: pd.DataFrame) -> pd.Series:
    """A point's identity across runs: its review, position and text."""
    raw = frame["report_id"].astype(str) + "\x1f" + frame["position"].astype(str) + "\x1f" + frame["point_text"]
    return pd.Series(pd.util.hash_array(raw.to_numpy(dtype=object)).astype("uint64").astype(str), index=frame.index)


@dataclass
class Grouping:
    """Everything a later run needs to put new points into the same groups."""

    vectorizer: TfidfVectorizer
    word_vectors: np.ndarray  # one row per term of the vectorizer
    common: np.ndarray  # (1, dimensions): the direction every point shares, removed
    centroids: np.ndarray
    group_ids: list[int]
    labels: list[str]
    assign_threshold: float
    next_id: int
    # A new group must be as tight as a typical fitted one (median over groups of the mean
    # similarity between two of its points), or a few stray points would open groups that
    # teach nothing.
    new_group_threshold: float
    assignments: dict[str, int] = field(default_factory=dict)  # point key -> group id
    random_state: int = 0

    def embed(self, lemmas: list[str]) -> np.ndarray:
        return _embed(self.vectorizer.transform(lemmas), self.word_vectors, self.common)

    # -- persistence (skops for the vectorizer, .npz for arrays, JSON for the rest) --------
    def save(self, folder: Path) -> Path:
        import skops.io as sio

        folder.mkdir(parents=True, exist_ok=True)
        sio.dump({"vectorizer": self.vectorizer}, folder / "representation.skops")
        np.savez(folder / "word_vectors.npz", word_vectors=self.word_vectors, common=self.common)
        state = {
            "representation": REPRESENTATION,
            "centroids": self.centroids.tolist(),
            "group_ids": self.group_ids,
            "labels": self.labels,
            "assign_threshold": self.assign_threshold,
            "new_group_threshold": self.new_group_threshold,
            "next_id": self.next_id,
            "assignments": self.assignments,
            "random_state": self.random_state,
        }
        (folder / "groups.json").write_text(json.dumps(state, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: Path) -> Grouping:
        import skops.io as sio

        state = json.loads((folder / "groups.json").read_text())
        if state.get("representation") != REPRESENTATION:
            raise ValueError(
                f"{folder}: this grouping was saved by an earlier version with another representation; "
                "move the folder away to group from scratch (group ids will be new)"
            )
        path = folder / "representation.skops"
        untrusted = sio.get_untrusted_types(file=path)
        unexpected = [t for t in untrusted if not t.startswith(("numpy.", "scipy.", "sklearn.", "builtins."))]
        if unexpected:
            raise ValueError(f"{path}: refusing to load untrusted types {unexpected}")
        parts = sio.load(path, trusted=untrusted)
        with np.load(folder / "word_vectors.npz", allow_pickle=False) as arrays:
            word_vectors, common = arrays["word_vectors"], arrays["common"]
        return cls(
            vectorizer=parts["vectorizer"],
            word_vectors=word_vectors,
            common=common,
            centroids=np.asarray(state["centroids"], dtype=np.float64),
            group_ids=[int(g) for g in state["group_ids"]],
            labels=list(state["labels"]),
            assign_threshold=float(state["assign_threshold"]),
            new_group_threshold=float(state["new_group_threshold"]),
            next_id=int(state["next_id"]),
            assignments={k: int(v) for k, v in state["assignments"].items()},
            random_state=int(state["random_state"]),
        )


def _lemma_texts(texts: list[str]) -> list[str]:
    from pipelines.text import lemmatise

    return lemmatise(texts)


def _embed(tfidf: sp.csr_matrix, word_vectors: np.ndarray, common: np.ndarray) -> np.ndarray:
    """A point is the TF-IDF weighted mean of its word vectors, less the shared direction
    (Arora et al. 2017), on the unit sphere."""
    return _less_common(normalize(np.asarray(tfidf @ word_vectors)), common)


def _less_common(X: np.ndarray, common: np.ndarray) -> np.ndarray:
    return normalize(X - (X @ common.T) @ common)


def _word_vectors(vectorizer: TfidfVectorizer, lemmas: list[str], random_state: int) -> np.ndarray:
    """Vectors of the vectorizer's terms from their contexts in ``lemmas``: positive PMI of
    terms seen within WORD_WINDOW terms of each other (context counts smoothed by ^0.75),
    reduced by truncated SVD (Levy, Goldberg and Dagan 2015). Learnt from the reviews
    themselves: no pretrained model is needed, and the vocabulary is the council's own.
    With too few terms to reduce, each term is its own dimension (plain TF-IDF)."""
    vocabulary = vectorizer.vocabulary_
    n_terms = len(vocabulary)
    if n_terms <= WORD_DIMENSIONS:
        return np.eye(n_terms)
    analyse = vectorizer.build_analyzer()
    docs = [[vocabulary[t] for t in analyse(text) if t in vocabulary] for text in lemmas]
    ids = np.fromiter((i for d in docs for i in d), dtype=np.int32)
    doc = np.repeat(np.arange(len(docs), dtype=np.int32), [len(d) for d in docs])
    counts = sp.csr_matrix((n_terms, n_terms), dtype=np.float64)
    for offset in range(1, WORD_WINDOW + 1):
        same = doc[offset:] == doc[:-offset]
        pairs = (ids[:-offset][same], ids[offset:][same])
        counts = counts + sp.csr_matrix((np.ones(len(pairs[0])), pairs), shape=(n_terms, n_terms))
    counts = (counts + counts.T).tocoo()
    word = np.asarray(counts.sum(axis=1)).ravel()
    context = np.asarray(counts.sum(axis=0)).ravel() ** 0.75
    pmi = np.log(counts.data * context.sum() / (word[counts.row] * context[counts.col]))
    positive = pmi > 0
    ppmi = sp.csr_matrix((pmi[positive], (counts.row[positive], counts.col[positive])), shape=(n_terms, n_terms))
    svd = TruncatedSVD(WORD_DIMENSIONS, random_state=random_state, algorithm="randomized", n_iter=7)
    return normalize(svd.fit_transform(ppmi))


def _new_representation(
    lemmas: list[str], random_state: int
) -> tuple[TfidfVectorizer, np.ndarray, np.ndarray, np.ndarray]:
    """(vectorizer, word vectors, shared direction, points embedded): lemma TF-IDF without stop
    words, word vectors learnt from the same text, and each point as its words' weighted mean."""
    vectorizer = TfidfVectorizer(
        sublinear_tf=True,
        # A handful of points (a single new review) cannot afford to drop rare or common terms.
        min_df=2 if len(lemmas) >= 20 else 1,
        max_df=0.5 if len(lemmas) >= 20 else 1.0,
        stop_words=GROUPING_STOP_WORDS,
        token_pattern=r"(?u)\b[a-z][a-z'-]+\b",
        dtype=np.float64,
    )
    tfidf = vectorizer.fit_transform(lemmas)
    word_vectors = _word_vectors(vectorizer, lemmas, random_state)
    X = normalize(np.asarray(tfidf @ word_vectors))
    # With a handful of points the shared direction is the points themselves: keep it.
    common = (
        TruncatedSVD(1, random_state=random_state).fit(X).components_
        if len(lemmas) >= 20
        else np.zeros((1, X.shape[1]))
    )
    return vectorizer, word_vectors, common, _less_common(X, common)


def _cluster(
    X: np.ndarray, seeds: np.ndarray, random_state: int, k_range: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, centroids): KMeans on unit vectors (cosine), k chosen by silhouette on a sample.

    Seed centroids, when given, are the first centres of every candidate k.
    """
    n = len(X)
    # Learning points have little cluster structure (silhouettes of 0.05-0.1), and silhouette
    # keeps rising with k; capping k at sqrt(n/2) keeps groups broad enough to recur across
    # reviews and few enough for a bulletin. Mixed sources can make a split by source (two or
    # three groups) score best, which teaches a manager nothing: k starts at a third of the cap.
    cap = max(3, min(MAX_GROUPS, int(np.sqrt(n / 2))))
    low, high = k_range or (max(2, len(seeds) + 1, cap // 3), cap)
    high = max(low, high)
    candidates = sorted(set(np.unique(np.geomspace(low, high, num=min(12, high - low + 1)).round().astype(int))))
    rng = np.random.default_rng(random_state)
    sample = rng.choice(n, size=min(n, SILHOUETTE_SAMPLE), replace=False) if n > SILHOUETTE_SAMPLE else np.arange(n)
    best = None
    for k in candidates:
        if k >= n:
            break
        init = "k-means++"
        if len(seeds):
            extra, _ = (
                kmeans_plusplus(X, n_clusters=k - len(seeds), random_state=random_state)
                if k > len(seeds)
                else (np.empty((0, X.shape[1])), None)
            )
            init = np.vstack([seeds, extra])
        model = KMeans(k, init=init, n_init=1 if len(seeds) else 3, random_state=random_state).fit(X)
        labels = model.labels_
        if len(np.unique(labels[sample])) < 2:
            continue
        score = silhouette_score(X[sample], labels[sample], metric="cosine")
        if best is None or score > best[0]:
            best = (score, labels, normalize(model.cluster_centers_))
    if best is None:
        return np.zeros(n, dtype=int), normalize(X.mean(axis=0, keepdims=True))
    return best[1], best[2]


def _tightness(X: np.ndarray) -> float:
    """Mean cosine similarity between two different points of a group (unit vectors); unlike
    similarity to the group's own centre, it does not flatter small groups."""
    m = len(X)
    total = X.sum(axis=0)
    return float((total @ total - m) / (m * (m - 1)))


def _typical_tightness(X: np.ndarray, labels: np.ndarray) -> float:
    """Median tightness of the groups with two or more points (0 when there are none)."""
    groups, sizes = np.unique(labels, return_counts=True)
    values = [_tightness(X[labels == g]) for g in groups[sizes > 1]]
    return float(np.median(values)) if values else 0.0


def _key_phrases(lemmas: list[str], labels: np.ndarray, groups: list[int]) -> dict[int, str]:
    """The most distinctive phrase of each group (class-based TF-IDF over lemma words and pairs)."""
    counter = CountVectorizer(
        ngram_range=(1, 2),
        stop_words=GROUPING_STOP_WORDS,
        token_pattern=r"(?u)\b[a-z][a-z'-]+\b",
        min_df=2,
    )
    try:
        counts = counter.fit_transform(lemmas)
    except ValueError:
        return {g: f"group {g}" for g in groups}
    terms = counter.get_feature_names_out()
    per_group = np.vstack([np.asarray(counts[labels == g].sum(axis=0)).ravel() for g in groups]).astype(float)
    frequency = per_group.sum(axis=0) + 1
    average = per_group.sum() / max(1, len(groups))
    score = (per_group / (per_group.sum(axis=1, keepdims=True) + 1)) * np.log(1 + average / frequency)
    bigram = np.array([" " in t for t in terms])
    phrases = {}
    for row, g in enumerate(groups):
        order = np.argsort(-score[row], kind="stable")
        top = order[:5]
        # A word pair reads better than a single word when it is nearly as distinctive.
        pairs = [j for j in top if bigram[j] and score[row, j] >= 0.6 * score[row, top[0]]]
        phrases[g] = terms[pairs[0]] if pairs else terms[top[0]]
    return phrases


def fit_groups(
    points: pd.DataFrame, seed_themes: list[dict] | None = None, random_state: int = 0
) -> tuple[Grouping, np.ndarray]:
    """Group learning points from scratch; returns the grouping and each point's group id (-1: ungrouped)."""
    lemmas = _lemma_texts(points["point_text"].tolist())
    vectorizer, word_vectors, common, X = _new_representation(lemmas, random_state)
    seeds = seed_themes or []
    seed_vectors = (
        np.vstack(
            [
                _embed(vectorizer.transform(_lemma_texts(s["examples"])), word_vectors, common).mean(axis=0)
                for s in seeds
            ]
        )
        if seeds
        else np.empty((0, X.shape[1]))
    )
    if len(seed_vectors):
        seed_vectors = normalize(seed_vectors)
    labels, centroids = _cluster(X, seed_vectors, random_state)
    similarity = (X * centroids[labels]).sum(axis=1)
    # The loosest few per cent join no group: better "ungrouped" than a wrong group.
    threshold = float(np.quantile(similarity, UNGROUPED_SHARE)) if len(similarity) > 20 else 0.0
    group_ids = list(range(len(centroids)))
    names = _key_phrases(lemmas, labels, group_ids)
    seed_names = [s["name"] for s in seeds]
    titles = [seed_names[g] if g < len(seed_names) else names[g] for g in group_ids]
    assigned = np.where(similarity >= threshold, labels, -1)
    keys = point_key(points)
    grouping = Grouping(
        vectorizer=vectorizer,
        word_vectors=word_vectors,
        common=common,
        centroids=centroids,
        group_ids=group_ids,
        labels=titles,
        assign_threshold=threshold,
        new_group_threshold=_typical_tightness(X, labels),
        next_id=len(group_ids),
        assignments=dict(zip(keys, map(int, assigned))),
        random_state=random_state,
    )
    return grouping, assigned


def assign_groups(grouping: Grouping, points: pd.DataFrame) -> tuple[Grouping, np.ndarray]:
    """Put points into an existing grouping: known points keep their group; new ones join the
    nearest group that fits, and those that fit none may form new groups (new ids)."""
    keys = point_key(points).tolist()
    result = np.array([grouping.assignments.get(k, -2) for k in keys])
    new = np.flatnonzero(result == -2)
    if len(new):
        X = grouping.embed(_lemma_texts(points["point_text"].iloc[new].tolist()))
        sims = X @ grouping.centroids.T
        nearest = sims.argmax(axis=1)
        fits = sims[np.arange(len(new)), nearest] >= grouping.assign_threshold
        result[new[fits]] = np.asarray(grouping.group_ids)[nearest[fits]]
        leftover = new[~fits]
        result[leftover] = -1
        reports = points["report_id"].iloc[leftover]
        if len(leftover) >= 2 * MIN_GROUP_POINTS and reports.nunique() >= 2:
            pool = X[~fits]
            labels, centroids = _cluster(
                pool,
                np.empty((0, pool.shape[1])),
                grouping.random_state,
                (2, max(2, len(leftover) // MIN_GROUP_POINTS)),
            )
            sims_pool = (pool * centroids[labels]).sum(axis=1)
            lemmas = _lemma_texts(points["point_text"].iloc[leftover].tolist())
            names = _key_phrases(lemmas, labels, list(range(len(centroids))))
            for local in range(len(centroids)):
                members = (labels == local) & (sims_pool >= grouping.assign_threshold)
                if (
                    members.sum() < MIN_GROUP_POINTS
                    or reports.iloc[members].nunique() < 2
                    or _tightness(pool[members]) < grouping.new_group_threshold
                ):
                    continue
                gid = grouping.next_id
                grouping.next_id += 1
                grouping.group_ids.append(gid)
                grouping.labels.append(names[local])
                grouping.centroids = np.vstack([grouping.centroids, centroids[local]])
                result[leftover[members]] = gid
        for k, i in zip(np.asarray(keys, dtype=object)[new], new):
            grouping.assignments[k] = int(result[i])
    return grouping, result


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
    frame["date"] = _iso_dates(frame["date"])
    return frame.reset_index(drop=True), problems


def _iso_dates(values: pd.Series) -> pd.Series:
    """Dates as YYYY-MM-DD text: ISO first, then UK day-first (15/02/2024); blank if neither."""
    text = values.fillna("").astype(str).str.strip()
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601")
    rest = parsed.isna() & (text != "")
    if rest.any():
        parsed[rest] = pd.to_datetime(text[rest], errors="coerce", dayfirst=True, format="mixed")
    return parsed.dt.strftime("%Y-%m-%d").fillna("")


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
POINTS_OUTPUT = ["report_id", "position", "section", "point_text", "group_id", "group_label", "date", "team", "marker"]
GROUPS_OUTPUT = [
    "group_id",
    "group_label",
    "n_points",
    "n_reviews",
    "teams",
    "first_seen",
    "last_seen",
    "recurring",
    "representative_points",
]


def summarise_groups(points: pd.DataFrame, grouping: Grouping, n_representative: int = 3) -> pd.DataFrame:
    """One row per group with points: counts, teams, first and last seen, recurring, and the
    points nearest the group's centre (from distinct reviews where possible)."""
    grouped = points[points["group_id"] >= 0]
    if grouped.empty:
        return pd.DataFrame(columns=GROUPS_OUTPUT)
    X = grouping.embed(_lemma_texts(grouped["point_text"].tolist()))
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
                "n_points": len(members),
                "n_reviews": members["report_id"].nunique(),
                "teams": "; ".join(sorted({t for t in members["team"] if t})),
                "first_seen": dates.min() if len(dates) else "",
                "last_seen": dates.max() if len(dates) else "",
                "recurring": bool(members["report_id"].nunique() >= 2),
                "representative_points": " | ".join(representative["point_text"]),
            }
        )
    return pd.DataFrame(rows, columns=GROUPS_OUTPUT).sort_values(
        ["recurring", "n_reviews", "group_id"], ascending=[False, False, True]
    )


def load_seed_themes(path: Path) -> list[dict]:
    """Known learning themes from YAML: a list of ``{name, examples: [phrase, ...]}``."""
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    themes = raw.get("themes", raw) if isinstance(raw, dict) else raw
    out = []
    for i, theme in enumerate(themes, start=1):
        if not isinstance(theme, dict) or not theme.get("name") or not theme.get("examples"):
            raise ValueError(f"{path}: theme {i} needs a 'name' and a list of 'examples'")
        out.append({"name": str(theme["name"]), "examples": [str(e) for e in theme["examples"]]})
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
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """(points, groups, problems): extract learning points from reviews and group them, reusing
    (and updating) the saved grouping in ``grouping_dir`` when there is one."""
    from pipelines.tables import InputError

    reviews, problems = read_reviews(source, id_column, text_column, date_column, team_column, name_column)
    points, empty = extract_review_points(reviews)
    problems += empty
    if points.empty:
        raise InputError(f"{source}: no learning points found in any review")
    if grouping_dir is not None and (grouping_dir / "groups.json").exists():
        grouping, assigned = assign_groups(Grouping.load(grouping_dir), points)
    else:
        seeds = load_seed_themes(seed_themes) if seed_themes else None
        grouping, assigned = fit_groups(points, seeds, random_state)
    if grouping_dir is not None:
        grouping.save(grouping_dir)
    labels = dict(zip(grouping.group_ids, grouping.labels))
    points = points.assign(group_id=assigned.astype(int), group_label=[labels.get(g, "") for g in assigned])
    for problem in problems:
        log.warning(
            "review skipped or empty",
            extra={"fields": {"source": problem["source"], "reason": problem["reason"][:200]}},
        )
    return points[POINTS_OUTPUT], summarise_groups(points, grouping), problems


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
        len(points),
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
    """Record the grouping as an MLflow run (counts as metrics, the saved grouping as artifacts).

    The artifacts hold group names, centroids and point hashes, never point text."""
    import mlflow

    from pipelines.config import configure_mlflow

    experiment_id = configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="learning-groups") as run:
        mlflow.set_tag("kind", "learning-groups")
        mlflow.log_metrics(
            {
                "points": summary.points,
                "groups": summary.groups,
                "recurring_groups": summary.recurring_groups,
                "ungrouped": summary.ungrouped,
                "problems": len(summary.problems),
            }
        )
        mlflow.log_artifacts(str(grouping_dir), artifact_path="grouping")
    return run.info.run_id
