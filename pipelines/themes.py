"""The substantive-theme classifier: one scikit-learn Pipeline, and its MLflow pyfunc wrapper.

``make_pipeline()`` gives ``Redactor -> word + character TF-IDF -> ThemeClassifier``.
``ThemeClassifier`` is a linear SVM whose scores are calibrated (temperature scaling for
single-label, Platt scaling per theme for multi-label) on out-of-fold predictions, with
decision thresholds chosen on those same out-of-fold predictions. For single-label themes the
SVM is the average of the fold SVMs, so what is scored is what the calibration saw.

* ``review_threshold_``: the lowest confidence at which tags reach the target precision;
  tags below it get ``needs_review``;
* ``label_thresholds_`` (multi-label): per theme, the probability that maximises F1.

When the training labels come with finer ones that roll up to them (a taxonomy's sub-themes,
or the codes of another framework mapped through a crosswalk), a second SVM learns those and
its probabilities, summed per theme, are averaged (in log space) with the theme SVM's. A theme
is often several different complaints ("waiting for a referral" and "no parking" are both
Access): one linear boundary per sub-theme fits that better than one per theme.

:func:`tag` turns texts into the scorer's output columns, including ``evidence``: the
words whose weights pushed each text most towards its theme.
"""

from __future__ import annotations

import copy
import json
import re
import weakref
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from joblib import Parallel, delayed
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logsumexp, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import MultiLabelBinarizer
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted
from spacy.lang.en.stop_words import STOP_WORDS

from pipelines.schema import FEEDBACK_TYPE_INPUT, known_types, normalise_types, unknown_types
from pipelines.text import Redactor, as_text

LABEL_SEPARATOR = ";"


class ThemeClassifier(ClassifierMixin, BaseEstimator):
    """Calibrated linear SVM with a review threshold chosen for a target precision.

    Parameters
    ----------
    multi_label : bool
        ``y`` holds ``;``-separated labels and each text may get several themes.
    C : float
        Inverse regularisation strength of the linear SVM.
    class_weight : "balanced" or None
        "balanced" weights rare themes up, so they are not drowned by common ones.
    target_precision : float
        Share of tags that should be right among those not sent to review.
    cv : int
        Folds for the out-of-fold scores used for calibration and thresholds.
    min_sub_theme_count : int
        With ``sub_labels``, a sub-theme needs this many examples to be learned on its own;
        rarer ones are pooled with the rest of their theme.
    n_jobs : int or None
        Processes for the fold fits (None: one).
    random_state : int

    Example
    -------
    >>> clf = ThemeClassifier(target_precision=0.9).fit(X, ["communication", ...])
    >>> clf.predict_proba(X)
    >>> ThemeClassifier().fit(X, themes, sub_labels=sub_themes)  # learns the sub-themes too
    """

    def __init__(
        self,
        multi_label=False,
        C=0.2,
        class_weight="balanced",
        target_precision=0.85,
        cv=5,
        min_sub_theme_count=20,
        n_jobs=None,
        random_state=42,
    ):
        self.multi_label = multi_label
        self.C = C
        self.class_weight = class_weight
        self.target_precision = target_precision
        self.cv = cv
        self.min_sub_theme_count = min_sub_theme_count
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X, y, sub_labels=None, sample_weight=None):
        """Fit on themes ``y``; ``sub_labels`` (optional, single-label only) are finer labels,
        one per row, that roll up to ``y``: a sub-theme, or another framework's code.
        ``sample_weight`` (single-label only) weights rows in the SVM fits, e.g. a council's own
        labelled complaints above the public data."""
        y = np.asarray(y, dtype=object)
        for name, extra in (("sub_labels", sub_labels), ("sample_weight", sample_weight)):
            if extra is not None and len(extra) != len(y):
                raise ValueError(f"{name} has {len(extra)} rows, y has {len(y)}")
        if self.multi_label:
            if sub_labels is not None or sample_weight is not None:
                raise ValueError("sub_labels and sample_weight are for single-label themes, not multi-label")
            self._fit_multi_label(X, y)
        else:
            weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
            self._fit_single_label(X, y, sub_labels, weight)
        return self

    def _svm(self):
        return LinearSVC(C=self.C, class_weight=self.class_weight, random_state=self.random_state)

    def _fit_single_label(self, X, y, sub_labels=None, weight=None):
        self.classes_, y_index, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(self.classes_) < 2:
            raise ValueError("training data needs at least two themes")
        if counts.min() < 2:
            rare = self.classes_[counts < 2].tolist()
            raise ValueError(f"themes with fewer than 2 examples cannot be learned: {rare}")
        n_splits = max(2, min(self.cv, int(counts.min())))
        self.sub_classes_, self.sub_parent_, sub_index = None, None, None
        if sub_labels is not None:
            self.sub_classes_, self.sub_parent_, sub_index = _sub_themes(
                self.classes_, y_index, sub_labels, max(self.min_sub_theme_count, n_splits), n_splits
            )
            if len(self.sub_classes_) == len(self.classes_):  # no theme splits: nothing to add
                self.sub_classes_, self.sub_parent_, sub_index = None, None, None
        # Stratified on the sub-themes when there are any, so each training fold holds every one.
        folds = list(
            StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state).split(
                X, y_index if sub_index is None else sub_index
            )
        )
        fits = self._fit_with_folds(X, {"sub": sub_index, "themes": y_index}, folds, weight)
        self.estimator_, oof = fits["themes"]
        if sub_index is None:
            self.temperature_ = _fit_temperature(oof, y_index)
        else:
            self.sub_estimator_, sub_oof = fits["sub"]
            self.theme_temperature_ = _fit_temperature(oof, y_index)
            self.sub_temperature_ = _fit_temperature(sub_oof, sub_index)
            oof = self._combine(oof, sub_oof)[0]
            self.temperature_ = _fit_temperature(oof, y_index)
        proba = softmax(oof / self.temperature_, axis=1)
        correct = proba.argmax(axis=1) == y_index
        self._set_review_threshold(proba.max(axis=1), correct)
        return self

    def _fit_with_folds(self, X, targets: dict, folds, weight=None) -> dict:
        """For each target (skipping None): the average of the SVMs fitted on each fold's
        training rows (itself a linear SVM), and their out-of-fold scores, which calibrate it.
        The fits run as one batch of threads (liblinear releases the GIL), in the targets'
        order: put the largest problem first."""
        jobs = [(name, y, train) for name, y in targets.items() if y is not None for train, _ in folds]
        fitted = Parallel(n_jobs=self.n_jobs, prefer="threads")(
            delayed(self._svm().fit)(X[train], y[train], None if weight is None else weight[train])
            for _, y, train in jobs
        )
        out = {}
        for name in dict.fromkeys(job[0] for job in jobs):
            models = [m for job, m in zip(jobs, fitted) if job[0] == name]
            oof = np.empty((X.shape[0], len(models[0].classes_)))
            for model, (_, test) in zip(models, folds):
                oof[test] = _two_columns(model.decision_function(X[test]))
            out[name] = (_average_svm(models), oof)
        return out

    def _fit_multi_label(self, X, y):
        lists = [[p.strip() for p in str(v).split(LABEL_SEPARATOR) if p.strip()] for v in y]
        self.binarizer_ = MultiLabelBinarizer().fit(lists)
        Y = self.binarizer_.transform(lists)
        self.classes_ = self.binarizer_.classes_
        positives = Y.sum(axis=0)
        if (positives < 2).any():
            raise ValueError(
                f"themes with fewer than 2 examples cannot be learned: {self.classes_[positives < 2].tolist()}"
            )
        ovr = OneVsRestClassifier(self._svm())
        oof = cross_val_predict(
            ovr,
            X,
            Y,
            cv=KFold(self.cv, shuffle=True, random_state=self.random_state),
            method="decision_function",
            n_jobs=self.n_jobs,
        )
        self.platt_ = np.array([_fit_platt(oof[:, k], Y[:, k]) for k in range(Y.shape[1])])
        self.estimator_ = ovr.fit(X, Y)
        proba = expit(oof * self.platt_[:, 0] + self.platt_[:, 1])
        self.label_thresholds_ = np.array([_best_f1_threshold(proba[:, k], Y[:, k]) for k in range(Y.shape[1])])
        top = proba.argmax(axis=1)
        correct = Y[np.arange(len(Y)), top] == 1
        self._set_review_threshold(proba.max(axis=1), correct)
        return self

    def _set_review_threshold(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Lowest confidence whose tags at or above it reach the target precision (out of fold)."""
        order = np.argsort(-confidence, kind="stable")
        precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(precision >= self.target_precision)
        if len(ok):
            k = ok[-1]
            self.review_threshold_ = float(confidence[order][k])
            self.review_coverage_ = float((k + 1) / len(order))
            self.review_precision_ = float(precision[k])
        else:  # the model never reaches the target: everything goes to review
            self.review_threshold_, self.review_coverage_, self.review_precision_ = (
                1.0 + 1e-9,
                0.0,
                float("nan"),
            )

    # -- prediction ----------------------------------------------------------------------
    def _combine(self, theme_scores: np.ndarray, sub_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the theme SVM's and the rolled-up sub-theme SVM's log-probabilities, and the
        sub-themes' log-probabilities."""
        sub_log_p = log_softmax(sub_scores / self.sub_temperature_, axis=1)
        rolled = np.column_stack(
            [logsumexp(sub_log_p[:, self.sub_parent_ == k], axis=1) for k in range(len(self.classes_))]
        )
        return 0.5 * log_softmax(theme_scores / self.theme_temperature_, axis=1) + 0.5 * rolled, sub_log_p

    def _scores(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        check_is_fitted(self, "estimator_")
        scores = _two_columns(self.estimator_.decision_function(X))
        if getattr(self, "sub_classes_", None) is None:
            return scores, None
        return self._combine(scores, _two_columns(self.sub_estimator_.decision_function(X)))

    def decision_function(self, X) -> np.ndarray:
        """Per-theme scores; ``predict_proba`` is their softmax at the fitted temperature."""
        return self._scores(X)[0]

    def predict_proba(self, X) -> np.ndarray:
        """Calibrated probabilities, one column per theme in ``classes_`` (multi-label: independent)."""
        return self._proba(X)[0]

    def _proba(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        scores, sub_log_p = self._scores(X)
        if self.multi_label:
            return expit(scores * self.platt_[:, 0] + self.platt_[:, 1]), None
        return softmax(scores / self.temperature_, axis=1), sub_log_p

    def predict(self, X) -> np.ndarray:
        """Themes, as given in ``y``: one per row, or ``;``-joined when multi-label."""
        return self.tag_arrays(self.predict_proba(X))[1]

    def tag_arrays(self, proba: np.ndarray):
        """(theme index, themes text, confidence, needs_review) from calibrated probabilities."""
        top = proba.argmax(axis=1)
        confidence = proba[np.arange(len(proba)), top]
        if self.multi_label:
            chosen = proba >= self.label_thresholds_
            chosen[np.arange(len(proba)), top] = True
            themes = np.array(
                [LABEL_SEPARATOR.join(self.classes_[row]) for row in chosen],
                dtype=object,
            )
        else:
            themes = self.classes_[top].astype(object)
        return top, themes, confidence, confidence < self.review_threshold_

    def coef_for_evidence(self) -> np.ndarray:
        """(n_evidence_rows, n_features) weights: how much each feature pushes towards a theme,
        or, with sub-themes, towards each sub-theme and its theme (rows of ``sub_classes_``)."""
        if self.multi_label:
            return np.vstack([e.coef_ for e in self.estimator_.estimators_])
        coef = _two_rows(self.estimator_.coef_)
        if getattr(self, "sub_classes_", None) is None:
            return coef
        sub = _two_rows(self.sub_estimator_.coef_)
        return 0.5 * coef[self.sub_parent_] / self.theme_temperature_ + 0.5 * sub / self.sub_temperature_

    def evidence_rows(self, theme_index: np.ndarray, sub_log_p: np.ndarray | None) -> np.ndarray:
        """Row of :meth:`coef_for_evidence` explaining each text: its theme, or with sub-themes
        the most likely sub-theme of its theme."""
        if sub_log_p is None:
            return theme_index
        inside = self.sub_parent_[None, :] == np.asarray(theme_index)[:, None]
        return np.where(inside, sub_log_p, -np.inf).argmax(axis=1)


def _two_columns(scores: np.ndarray) -> np.ndarray:
    """LinearSVC gives one score column for two classes; make it one per class."""
    return np.column_stack([-scores, scores]) / 2 if scores.ndim == 1 else scores


def _two_rows(coef: np.ndarray) -> np.ndarray:
    """The weights behind :func:`_two_columns`: one row per class."""
    return _two_columns(coef[0]).T if coef.shape[0] == 1 else coef


def _average_svm(models: list[LinearSVC]) -> LinearSVC:
    """One linear SVM whose weights are the mean of the given ones (same classes): the fold
    models averaged, so the model scored is what the out-of-fold calibration saw, less noisy."""
    average = copy.deepcopy(models[0])
    average.coef_ = np.mean([m.coef_ for m in models], axis=0)
    average.intercept_ = np.mean([m.intercept_ for m in models], axis=0)
    return average


def _sub_themes(classes, y_index, sub_labels, min_count: int, n_splits: int):
    """The sub-themes to learn (``"theme / sub"`` names), each one's theme index, and each row's
    sub-theme index. A sub-theme with fewer than ``min_count`` rows is pooled with the rest of
    its theme (``"theme / (other)"``); a pool smaller than ``n_splits`` joins the theme's
    largest sub-theme, so every class can be in every training fold."""
    sub = pd.Series(list(sub_labels), dtype=object).fillna("").astype(str).str.strip()
    rows = pd.DataFrame({"theme": y_index, "sub": sub.to_numpy(dtype=object)})
    size = rows[rows["sub"] != ""].groupby(["theme", "sub"]).size()
    big = size[size >= min_count]
    is_big = pd.MultiIndex.from_frame(rows).isin(big.index)
    rows["sub"] = rows["sub"].where(is_big, None)
    pooled = rows.loc[~is_big].groupby("theme").size()
    for theme in pooled.index[pooled < n_splits]:
        own = big[big.index.get_level_values(0) == theme]
        if len(own):
            rows.loc[(rows["theme"] == theme) & rows["sub"].isna(), "sub"] = own.idxmax()[1]
    sub_index, found = pd.factorize(
        pd.MultiIndex.from_arrays([rows["theme"], rows["sub"].fillna("(other)")]), sort=True
    )
    sub_parent = found.get_level_values(0).to_numpy()
    sub_classes = (
        np.asarray(classes, dtype=object)[sub_parent] + " / " + found.get_level_values(1).to_numpy(dtype=object)
    )
    return sub_classes, sub_parent, sub_index


def _lower_words(doc: str) -> list[str]:
    return doc.lower().split()


def _padded_char_ngrams(word: str, low: int, high: int) -> list[str]:
    padded = f" {word} "
    return [padded[i : i + n] for n in range(low, min(high, len(padded)) + 1) for i in range(len(padded) - n + 1)]


_WORD = re.compile(r"(?u)\b\w[\w']*\b")


class WordNgramVectorizer(TransformerMixin, BaseEstimator):
    """TF-IDF of words and word pairs, like ``TfidfVectorizer(ngram_range=(1, 2),
    token_pattern=r"(?u)\\b\\w[\\w']*\\b", sublinear_tf=True)``.

    Gives the same matrix, several times faster to transform: words are looked up once, and
    word pairs are found as pairs of word columns with one sorted search over the whole batch,
    instead of building each pair's string in Python.
    """

    def __init__(self, min_df=2, sublinear_tf=True):
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf

    def fit(self, X, y=None):
        counter = CountVectorizer(ngram_range=(1, 2), min_df=self.min_df, token_pattern=_WORD.pattern)
        counts = counter.fit_transform(X)
        self.vocabulary_ = {term: int(col) for term, col in counter.vocabulary_.items()}
        # A pair seen in 2+ texts has both words seen in 2+ texts, so both have a column.
        self.word_columns_ = {term: col for term, col in self.vocabulary_.items() if " " not in term}
        pairs = [(term.split(" "), col) for term, col in self.vocabulary_.items() if " " in term]
        keys = np.array([self._pair_key(self.word_columns_[a], self.word_columns_[b]) for (a, b), _ in pairs])
        order = np.argsort(keys)
        self.pair_keys_ = keys[order].astype(np.int64)
        self.pair_columns_ = np.array([col for _, col in pairs], dtype=np.int64)[order]
        self.tfidf_ = TfidfTransformer(sublinear_tf=self.sublinear_tf).fit(counts)
        return self

    def _pair_key(self, first, second):
        return first * len(self.vocabulary_) + second

    def _counts(self, X) -> sp.csr_matrix:
        tokens = [_WORD.findall(doc.lower()) for doc in X]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        flat = list(chain.from_iterable(tokens))
        word = np.fromiter((self.word_columns_.get(t, -1) for t in flat), dtype=np.int64, count=len(flat))
        doc = np.repeat(np.arange(len(tokens)), lengths)
        known = word >= 0
        rows, cols = [doc[known]], [word[known]]
        pair = (doc[1:] == doc[:-1]) & known[1:] & known[:-1]
        if len(self.pair_keys_) and pair.any():
            keys = self._pair_key(word[:-1][pair], word[1:][pair])
            at = np.minimum(np.searchsorted(self.pair_keys_, keys), len(self.pair_keys_) - 1)
            found = self.pair_keys_[at] == keys
            rows.append(doc[:-1][pair][found])
            cols.append(self.pair_columns_[at[found]])
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        counts = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(tokens), len(self.vocabulary_))
        )
        counts.sum_duplicates()
        return counts

    def transform(self, X) -> sp.csr_matrix:
        check_is_fitted(self, "vocabulary_")
        return self.tfidf_.transform(self._counts(X)).astype(np.float32)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array(sorted(self.vocabulary_, key=self.vocabulary_.get), dtype=object)


class CharNgramVectorizer(TransformerMixin, BaseEstimator):
    """TF-IDF of character n-grams within words, like ``TfidfVectorizer(analyzer="char_wb")``.

    Gives the same matrix, about seven times faster: a document's n-gram counts are the sum
    of its words' n-gram counts, so n-grams are built once per distinct word and summed with
    a sparse product (document x word counts) @ (word x n-gram counts).
    """

    def __init__(self, ngram_range=(1, 5), min_df=2, sublinear_tf=True):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf

    @staticmethod
    def _doc_word_counts(X) -> tuple[sp.csr_matrix, list[str]]:
        index: dict[str, int] = {}
        indptr, indices = [0], []
        for doc in X:
            indices.extend(index.setdefault(w, len(index)) for w in _lower_words(doc))
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        counts = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(index)))
        counts.sum_duplicates()
        return counts, list(index)

    def _word_ngram_counts(self, words: list[str], vocabulary: dict[str, int], grow: bool) -> sp.csr_matrix:
        low, high = self.ngram_range
        indptr, indices = [0], []
        for word in words:
            for gram in _padded_char_ngrams(word, low, high):
                j = vocabulary.get(gram)
                if j is None:
                    if not grow:
                        continue
                    j = vocabulary[gram] = len(vocabulary)
                indices.append(j)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        counts = sp.csr_matrix((data, indices, indptr), shape=(len(words), len(vocabulary)))
        counts.sum_duplicates()
        return counts

    def fit(self, X, y=None):
        docs, words = self._doc_word_counts(X)
        vocabulary: dict[str, int] = {}
        counts = (docs @ self._word_ngram_counts(words, vocabulary, grow=True)).tocsr()
        doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
        names = np.array(list(vocabulary), dtype=object)
        keep = np.flatnonzero(doc_freq >= self.min_df)
        keep = keep[np.argsort(names[keep])]
        self.vocabulary_ = {gram: i for i, gram in enumerate(names[keep])}
        self.tfidf_ = TfidfTransformer(sublinear_tf=self.sublinear_tf).fit(counts[:, keep])
        return self

    def transform(self, X) -> sp.csr_matrix:
        check_is_fitted(self, "vocabulary_")
        docs, words = self._doc_word_counts(X)
        counts = docs @ self._word_ngram_counts(words, self.vocabulary_, grow=False)
        return self.tfidf_.transform(counts).astype(np.float32)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.array(sorted(self.vocabulary_, key=self.vocabulary_.get), dtype=object)


def _fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature that minimises the log loss of softmax(scores / T); keeps the argmax."""

    def nll(log_t):
        return -log_softmax(scores / np.exp(log_t), axis=1)[np.arange(len(y_index)), y_index].mean()

    return float(np.exp(minimize_scalar(nll, bounds=(-6, 4), method="bounded").x))


def _fit_platt(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    lr = LogisticRegression(C=1e4).fit(scores.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def _best_f1_threshold(proba: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(-proba, kind="stable")
    tp = np.cumsum(y[order])
    f1 = 2 * tp / (np.arange(1, len(y) + 1) + y.sum())
    k = int(np.argmax(f1))
    return float(proba[order][k])


def make_pipeline(
    multi_label: bool = False,
    target_precision: float = 0.85,
    C: float = 0.2,
    n_jobs: int | None = None,
    random_state: int = 42,
) -> Pipeline:
    """The whole model as one estimator: redact, features, calibrated classifier with thresholds."""
    features = FeatureUnion(
        [
            # Words and word pairs carry meaning and are readable as evidence; min_df=2 keeps
            # one-off tokens (often names or typos) out of the vocabulary.
            ("words", WordNgramVectorizer(min_df=2)),
            # Character n-grams within words survive misspellings and inflections.
            (
                "chars",
                CharNgramVectorizer(ngram_range=(1, 5), min_df=2),
            ),
        ]
    )
    return Pipeline(
        [
            ("redact", Redactor()),
            ("features", features),
            (
                "classifier",
                ThemeClassifier(
                    multi_label=multi_label,
                    C=C,
                    target_precision=target_precision,
                    n_jobs=n_jobs,
                    random_state=random_state,
                ),
            ),
        ]
    )


# Negations are kept: "not", "nothing", "never" often are the evidence for a theme.
_EVIDENCE_STOP_WORDS = STOP_WORDS - {
    "no",
    "not",
    "nothing",
    "never",
    "none",
    "nobody",
    "noone",
    "without",
    "cannot",
}
_EVIDENCE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _evidence_weights(pipeline: Pipeline) -> tuple[np.ndarray, np.ndarray]:
    """Word-feature names and, per theme, how strongly each pushes a text towards it.

    A term's weight adds its own word weight and the weight of its character n-grams (the
    score the character features give to the term on its own), because much of what the
    model learned sits in character n-grams ("nothing" is carried by " noth", "thing"...).
    Terms that start or end with a stop word get no weight: they are poor evidence.
    """
    cached = _EVIDENCE_CACHE.get(pipeline)
    if cached is not None:
        return cached
    (_, words), (_, chars) = pipeline.named_steps["features"].transformer_list
    names = words.get_feature_names_out().astype(object)
    coef = pipeline.named_steps["classifier"].coef_for_evidence()
    char_part = chars.transform(names) @ coef[:, len(names) :].T  # (terms, themes)
    weights = (coef[:, : len(names)] + np.asarray(char_part).T).astype(np.float32)
    # A term that starts or ends with a stop word ("staff were") reads worse than its core word.
    weak = np.array([n.split()[0] in _EVIDENCE_STOP_WORDS or n.split()[-1] in _EVIDENCE_STOP_WORDS for n in names])
    weights[:, weak] = 0.0
    _EVIDENCE_CACHE[pipeline] = (names, weights)
    return names, weights


def _distinct_terms(terms: list[str], top_k: int) -> str:
    """The first ``top_k`` terms that share no word with a term already chosen."""
    chosen, used = [], set()
    for term in terms:
        words = set(term.split())
        if words & used:
            continue
        chosen.append(term)
        used |= words
        if len(chosen) == top_k:
            break
    return "; ".join(chosen)


def evidence(pipeline: Pipeline, features: sp.csr_matrix, rows_explained: np.ndarray, top_k: int = 3) -> np.ndarray:
    """For each text, up to ``top_k`` words or word pairs from it that pushed it most towards its
    theme; ``rows_explained`` picks each text's row of weights (``ThemeClassifier.evidence_rows``)."""
    names, weights = _evidence_weights(pipeline)
    X = features[:, : len(names)].tocsr()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    contribution = X.data * weights[rows_explained[rows], X.indices]
    keep = contribution > 0
    rows, cols, contribution = rows[keep], X.indices[keep], contribution[keep]
    order = np.lexsort((-contribution, rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    top = rank < 3 * top_k  # candidates; overlapping terms are dropped below
    rows, terms = rows[top], names[cols[top]]
    out = np.full(X.shape[0], "", dtype=object)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.empty(0, dtype=int)
    for row, group in zip(rows[starts], np.split(terms, starts[1:])):
        out[row] = _distinct_terms(group, top_k)
    return out


def _probabilities_json(proba: np.ndarray, classes: list[str]) -> list[str]:
    """Each row's probabilities as a JSON object; one format string, filled per row, is far
    quicker than json.dumps on a dict per row."""
    keys = [json.dumps(c).replace("{", "{{").replace("}", "}}") for c in classes]
    template = "{{" + ", ".join(k + ": {:.6g}" for k in keys) + "}}"
    return [template.format(*row) for row in proba.tolist()]


def _objects(values) -> pd.Series:
    """A column of Python strings: pandas 3 would otherwise copy each one into Arrow, which
    costs more than building the rest of the frame."""
    return pd.Series(values, dtype=object)


def restrict_to_given_types(
    proba: np.ndarray, classes: list[str], feedback_types: dict[str, str], given, multi_label: bool
) -> np.ndarray:
    """Probabilities with the themes of another feedback type set to zero where a row's type is
    given (and renormalised for single-label, so confidence is conditional on that type). A row
    with no given type, or a type this model has no themes for, is left alone."""
    given = np.array([str(g or "").strip().lower() for g in given], dtype=object)
    class_types = np.array([str(feedback_types.get(c, "")).lower() for c in classes], dtype=object)
    allowed = (given[:, None] == "") | (class_types[None, :] == given[:, None])
    allowed[~allowed.any(axis=1)] = True
    out = np.where(allowed, proba, 0.0)
    if not multi_label:
        total = out.sum(axis=1, keepdims=True)
        out = np.divide(out, total, out=proba.copy(), where=total > 0)
    return out


def tag(pipeline: Pipeline, texts, feedback_types: dict[str, str] | None = None, given_types=None) -> pd.DataFrame:
    """Score texts: theme, calibrated confidence, themes, needs_review, evidence, feedback type,
    and per-theme probabilities (JSON), one row per text in input order. ``given_types``
    (optional, one per text) restricts each theme to the feedback type an export states."""
    texts = [as_text(t) for t in texts]
    features = pipeline[:-1].transform(texts)
    clf: ThemeClassifier = pipeline.named_steps["classifier"]
    proba, sub_log_p = clf._proba(features)
    classes = [str(c) for c in clf.classes_]
    if given_types is not None and feedback_types:
        proba = restrict_to_given_types(proba, classes, feedback_types, given_types, clf.multi_label)
    top, themes, confidence, needs_review = clf.tag_arrays(proba)
    theme = np.asarray(classes, dtype=object)[top]
    types = feedback_types or {}
    return pd.DataFrame(
        {
            "theme": _objects(theme),
            "theme_confidence": confidence.astype(np.float64),
            "themes": _objects(themes),
            "needs_review": needs_review.astype(bool),
            "evidence": _objects(evidence(pipeline, features, clf.evidence_rows(top, sub_log_p))),
            "feedback_type": _objects([types.get(t, "") for t in theme]),
            "theme_probabilities": _objects(_probabilities_json(proba, classes)),
        }
    )


# -- MLflow pyfunc ------------------------------------------------------------------------
PIPELINE_ARTIFACT = "pipeline.skops"
INFO_ARTIFACT = "model_info.json"
TRUSTED_TYPES = [
    "pipelines.text.Redactor",
    "pipelines.themes.ThemeClassifier",
    "pipelines.themes.CharNgramVectorizer",
    "pipelines.themes.WordNgramVectorizer",
]


def save_pipeline(pipeline: Pipeline, path: Path) -> None:
    import skops.io as sio

    sio.dump(pipeline, path)


def load_pipeline(path: Path) -> Pipeline:
    """Load with skops: only scikit-learn, numpy and this package's own types are trusted."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    unexpected = [t for t in untrusted if t not in TRUSTED_TYPES and not t.startswith(("numpy.", "scipy.", "sklearn."))]
    if unexpected:
        raise ValueError(f"{path}: refusing to load untrusted types {unexpected}")
    return sio.load(path, trusted=untrusted)


try:  # mlflow is a core dependency, but keep the estimator importable without it
    import mlflow.pyfunc

    class ThemeModel(mlflow.pyfunc.PythonModel):
        """The pipeline as an MLflow model: ``predict`` takes a ``text`` column and returns
        :data:`OUTPUT_COLUMNS`, the same for the CLI, the nightly job and a Spark UDF."""

        def load_context(self, context):
            self.pipeline = load_pipeline(Path(context.artifacts["pipeline"]))
            self.info = json.loads(Path(context.artifacts["info"]).read_text())

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            """An optional ``feedback_type`` column (what the export says) restricts each row's
            theme to that type's themes; empty means unknown. A value the model's taxonomy does
            not know is refused here: file readers quarantine such rows before scoring. A model
            trained without a taxonomy has no feedback types and ignores the column."""
            texts = model_input["text"] if "text" in model_input.columns else model_input.iloc[:, 0]
            types = self.info.get("feedback_types")
            given = None
            if FEEDBACK_TYPE_INPUT in model_input.columns:
                given = normalise_types(model_input[FEEDBACK_TYPE_INPUT])
                unknown = unknown_types(given, types)
                if types and unknown.any():  # a model without feedback types cannot use them
                    raise ValueError(
                        f"column {FEEDBACK_TYPE_INPUT!r}, row {int(np.flatnonzero(unknown)[0]) + 1}: "
                        f"{given[unknown][0]!r} is not a feedback type of this model "
                        f"({', '.join(known_types(types)) or 'it has none'})"
                    )
            return tag(self.pipeline, texts, types, given)

except ImportError:  # pragma: no cover
    ThemeModel = None
