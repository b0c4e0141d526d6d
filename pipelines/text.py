"""Text processing with spaCy: normalisation, redaction of personal identifiers, lemmas.

Redaction is a spaCy component (``identifier_finder``) that marks identifier spans in
``doc.spans["identifiers"]``; :func:`redact` replaces them with placeholders such as
``[EMAIL]``. The redacted text is what every later step (features, evidence, reports,
MLflow artifacts) sees, so an identifier never leaves this module.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd
import spacy
from sklearn.base import BaseEstimator, TransformerMixin
from spacy.language import Language
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

HONORIFICS = ["mr", "mrs", "ms", "miss", "mx", "dr", "prof", "cllr", "sr"]
ROLES = ["doctor", "professor", "nurse", "sister", "matron"]
TITLES = HONORIFICS + ROLES


def _with_dots(words: list[str]) -> list[str]:
    return words + [w + "." for w in words]


# Regexes for identifiers whose shape spans several tokens; names use a token Matcher.
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+])(?:\+44\s?(?:\(0\)\s?)?|\(?0)\d{2,4}\)?[\s-]?\d{3,4}[\s-]?\d{3,4}(?!\w)")
_NHS = re.compile(r"(?<![\w-])\d{3}[\s-]?\d{3}[\s-]?\d{4}(?![\w-])")
_NINO = re.compile(
    r"(?<!\w)(?!BG|GB|KN|NK|NT|TN|ZZ)[A-Z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-D](?!\w)",
    re.IGNORECASE,
)
_POSTCODE = re.compile(
    r"(?<!\w)(?:GIR\s?0AA|[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?\s?\d[ABD-HJLNP-UW-Z]{2})(?!\w)",
    re.IGNORECASE,
)
# A street address: a house number (12, 12a), one to three capitalised street-name words, and
# a street word in any case ("12 Acacia Avenue", "4B Mill LANE"). Requiring the capitalised name
# keeps ordinary numbers ("3 weeks on the road", "2 visits a day") as they are.
STREET_WORDS = [
    "road", "rd", "street", "st", "avenue", "ave", "close", "lane", "drive", "way", "crescent", "place",
    "court", "gardens", "grove", "terrace", "mews", "walk", "square", "row", "hill",
]  # fmt: skip
_STREET = re.compile(
    r"(?<![\w.,])\d{1,4}[A-Za-z]?,?\s+(?:[A-Z][\w'\u2019.-]*\s+){1,3}(?i:" + "|".join(STREET_WORDS) + r")\b\.?"
)
# Cheap tests for "could this text hold an identifier at all?", supersets of the detectors
# below. Most feedback has none, and skipping spaCy for it keeps scoring fast. The first
# (any @, digit or title) is quick on every text; the second, run only on what passes it,
# asks for an @, a run of 3 digits (phones, NHS numbers), two letters then two digits (NI
# numbers), a digit then two letters at a word end (postcodes), a title, or a street word.
_TITLE_WORD = re.compile(r"\b(?:" + "|".join(TITLES) + r")\b", re.IGNORECASE)
_MAYBE = re.compile(r"[@\d]|\b(?:" + "|".join(TITLES) + r")\b")  # on lower-cased text: faster than IGNORECASE
_LIKELY = re.compile(
    r"@|\d{3}|[a-z]{2}\s?\d{2}|\d[a-z]{2}\b|\b(?:" + "|".join(TITLES + STREET_WORDS) + r")\b", re.IGNORECASE
)

PLACEHOLDERS = {
    "EMAIL": "[EMAIL]",
    "PHONE": "[PHONE]",
    "NHS_NUMBER": "[NHS_NUMBER]",
    "NI_NUMBER": "[NI_NUMBER]",
    "POSTCODE": "[POSTCODE]",
    "ADDRESS": "[ADDRESS]",
    "NAME": "[NAME]",
}

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
    }
)
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x08\x0e-\x1f\x7f]+")


def nhs_number_is_valid(digits: str) -> bool:
    """Modulus 11 check used by NHS numbers; an ordinary 10-digit number usually fails it."""
    if len(digits) != 10 or not digits.isdigit() or len(set(digits)) == 1:
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1)))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(digits[9])


def as_text(value) -> str:
    """A cell as text: missing values (None, NaN, NA) become the empty string."""
    if isinstance(value, str):
        return value
    return "" if value is None or pd.isna(value) else str(value)


def normalise(text: str) -> str:
    """Unicode-normalised text with plain quotes and dashes, no control characters, single spaces."""
    if not text.isascii():  # NFKC and the quote table change nothing in ASCII text
        text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    return _SPACE_OR_CONTROL.sub(" ", text).strip()


@Language.factory("identifier_finder")
def _make_identifier_finder(nlp: Language, name: str) -> IdentifierFinder:
    return IdentifierFinder(nlp)


class IdentifierFinder:
    """spaCy component: puts personal identifiers in ``doc.spans["identifiers"]``, labelled by kind."""

    def __init__(self, nlp: Language):
        self.matcher = Matcher(nlp.vocab)
        honorific = {"LOWER": {"IN": _with_dots(HONORIFICS)}}
        role = {"LOWER": {"IN": _with_dots(ROLES)}}
        dot = {"ORTH": ".", "OP": "?"}
        capitalised = {"IS_TITLE": True, "LOWER": {"NOT_IN": ["i"]}, "OP": "{1,3}"}
        # After an honorific ("Mrs smith", "DR PATEL") the next word is a name whatever its case;
        # after a role ("the nurse was kind") only a capitalised word is.
        any_case = {"IS_ALPHA": True, "IS_STOP": False}
        self.matcher.add(
            "NAME",
            [
                [honorific, dot, capitalised],
                [honorific, dot, any_case],
                [role, dot, capitalised],
            ],
            greedy="LONGEST",
        )

    def __call__(self, doc: Doc) -> Doc:
        return self.mark(doc, doc.text)

    def mark(self, doc: Doc, text: str) -> Doc:
        """Set ``doc.spans["identifiers"]``; ``text`` is ``doc.text``, passed in because
        spaCy rebuilds ``doc.text`` from the tokens on every access."""
        spans: list[Span] = []
        for label, pattern in (
            ("EMAIL", _EMAIL),
            ("NI_NUMBER", _NINO),
            ("POSTCODE", _POSTCODE),
            ("ADDRESS", _STREET),
        ):
            spans += self._char_spans(doc, label, (m.span() for m in pattern.finditer(text)))
        nhs = [m.span() for m in _NHS.finditer(text) if nhs_number_is_valid(re.sub(r"\D", "", m.group()))]
        spans += self._char_spans(doc, "NHS_NUMBER", nhs)
        phones = [m.span() for m in _PHONE.finditer(text) if 10 <= len(re.sub(r"\D", "", m.group())) <= 12]
        spans += self._char_spans(doc, "PHONE", phones)
        # The token matcher is the costly part; it can only match when a title word is there.
        matches = self.matcher(doc) if _TITLE_WORD.search(text) else []
        for _, start, end in matches:
            # Keep the title itself ("Mrs [NAME]"): it is not identifying and helps readers.
            first = start + 1 + (doc[start + 1].text == ".")
            if first < end:
                spans.append(Span(doc, first, self._hyphenated_end(doc, end), label="NAME"))
        doc.spans["identifiers"] = filter_spans(spans)
        return doc

    @staticmethod
    def _hyphenated_end(doc: Doc, end: int) -> int:
        """Extend a name over hyphenated parts and the capitalised words after them
        ("Smithers-Jones", "Anne-Marie Smith-Jones"): spaCy splits words at hyphens."""
        words = 0
        while end < len(doc) and words < 4:
            token = doc[end]
            joined = token.text in {"-", "\u2010", "\u2011"} and not doc[end - 1].whitespace_ and not token.whitespace_
            if joined and end + 1 < len(doc) and doc[end + 1].is_alpha:
                end, words = end + 2, words + 1
            elif words and token.is_title and token.is_alpha and doc[end - 1].whitespace_:
                end, words = end + 1, words + 1
            else:
                break
        return end

    @staticmethod
    def _char_spans(doc: Doc, label: str, offsets: Iterable[tuple[int, int]]) -> list[Span]:
        found = []
        for start, end in offsets:
            span = doc.char_span(start, end, label=label, alignment_mode="expand")
            if span is not None:
                found.append(span)
        return found


@lru_cache(maxsize=4)
def make_nlp(lemmatize: bool = False, sentences: bool = False) -> Language:
    """Blank English pipeline with the identifier finder, plus the rule-based sentencizer
    and the lookup lemmatizer when asked.

    Works offline: lemma tables come from ``spacy-lookups-data``; no trained model is needed.
    """
    nlp = spacy.blank("en")
    nlp.add_pipe("identifier_finder")
    if sentences:
        nlp.add_pipe("sentencizer")
    if lemmatize:
        nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
        nlp.initialize()
    return nlp


VOCAB_LIMIT = 100_000  # strings in the redaction pipeline's vocab before it is replaced by a fresh one


def _redaction_nlp() -> Language:
    """The redaction pipeline, renewed when its vocab has grown past :data:`VOCAB_LIMIT`: spaCy
    keeps every token text it has seen (a case number, a name), so over a million complaints a
    long-lived pipeline grew by hundreds of megabytes in every process that redacts."""
    nlp = make_nlp()
    if len(nlp.vocab.strings) > VOCAB_LIMIT:
        make_nlp.cache_clear()
        nlp = make_nlp()
    return nlp


def redact_doc(doc: Doc, text: str | None = None) -> str:
    """The doc's text with each identifier span replaced by its placeholder."""
    text = doc.text if text is None else text
    parts, cursor = [], 0
    for span in sorted(doc.spans["identifiers"], key=lambda s: s.start_char):
        parts += [text[cursor : span.start_char], PLACEHOLDERS[span.label_]]
        cursor = span.end_char
    parts.append(text[cursor:])
    return "".join(parts)


def redact(texts: Iterable[str]) -> list[str]:
    """Normalised texts with personal identifiers replaced by placeholders (``[NAME]``, ``[EMAIL]``...)."""
    out = [normalise(as_text(t)) for t in texts]
    candidates = [i for i, t in enumerate(out) if _MAYBE.search(t.lower()) and _LIKELY.search(t)]
    if candidates:
        nlp = _redaction_nlp()
        finder = nlp.get_pipe("identifier_finder")
        for i in candidates:
            # The tokenizer then the finder, as nlp(text) would run them, handing the finder
            # the text it already has.
            out[i] = redact_doc(finder.mark(nlp.make_doc(out[i]), out[i]), out[i])
    return out


def find_identifiers(text: str) -> list[tuple[str, str]]:
    """(kind, text) of each identifier found: for tests and for auditing redaction."""
    doc = make_nlp()(normalise(text))
    return [(s.label_, s.text) for s in doc.spans["identifiers"]]


def lemmatise(texts: Iterable[str]) -> list[str]:
    """Lower-cased lemmas joined by spaces (the lookup lemmatizer is case-sensitive)."""
    nlp = make_nlp(lemmatize=True)
    return [
        " ".join(t.lemma_ for t in doc if not t.is_space)
        for doc in nlp.pipe((t.lower() for t in texts), batch_size=512)
    ]


class Redactor(BaseEstimator, TransformerMixin):
    """First step of the theme pipeline: normalise and redact, so features never see identifiers."""

    def fit(self, X, y=None):
        return self

    def transform(self, X) -> np.ndarray:
        return np.asarray(redact(X), dtype=object)


_DEATH_OF = re.compile(
    r"death of\s+((?:(?:Mr|Mrs|Ms|Miss|Dr|Master)\.?\s+)?[A-Z][\w'\u2019-]+(?:\s+[A-Z][\w'\u2019-]+){0,4})"
)


def person_names(value: str) -> list[str]:
    """The words of a person's name from a metadata value: the name itself ("Jane Smith"), or
    the name after "death of" in a sentence such as a coroner's "investigation into the death of
    Jane Smith". Used to redact the subject of a review wherever the text names them."""
    value = as_text(value)
    match = _DEATH_OF.search(value)
    words = (match.group(1) if match else value).replace("\u2019", "'").split()
    return [
        w.strip(".,'")
        for w in words
        if len(w.strip(".,'")) > 1 and w.strip(".").lower() not in TITLES and w[0].isupper()
    ]


def redact_names(texts: list[str], names: list[list[str]]) -> list[str]:
    """Replace each text's own listed name words (and their possessives) with ``[NAME]``."""
    out = []
    for text, words in zip(texts, names):
        if words:
            pattern = (
                r"\b(?:"
                + "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
                + r")(?:['\u2019]s?)?\b"
            )
            text = re.sub(pattern, PLACEHOLDERS["NAME"], text)
        out.append(text)
    return out
