"""The council's theme taxonomy and crosswalks from other frameworks, both read from data files.

A council edits ``data/taxonomy.yaml`` to change its themes; a crosswalk maps another
labelled framework (e.g. the NHS Friends and Family Test) onto those themes so that
public labelled text can train a council model.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)


class TaxonomyError(ValueError):
    """A taxonomy or crosswalk file is malformed, or a label is not in the taxonomy."""


def sentence_case(name: str) -> str:
    """A theme id as people write it: ``quality_of_service`` -> ``Quality of service``."""
    words = str(name).replace("_", " ").replace("-", " ").split()
    return " ".join(words)[:1].upper() + " ".join(words)[1:] if words else str(name)


@dataclass(frozen=True)
class Theme:
    name: str
    feedback_type: str
    definition: str
    sub_themes: dict[str, str] = field(default_factory=dict)
    label: str = ""  # how reports name the theme; ids stay in data files

    @property
    def display_name(self) -> str:
        return self.label or sentence_case(self.name)


@dataclass(frozen=True)
class Taxonomy:
    """Themes grouped by feedback type; sub-themes roll up to their theme."""

    name: str
    version: str
    themes: tuple[Theme, ...]
    source_sha256: str = ""
    examples: tuple[tuple[str, str], ...] = ()  # (theme or sub-theme, example text)

    @classmethod
    def from_file(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        try:
            raw_bytes = path.read_bytes()
        except FileNotFoundError:
            raise TaxonomyError(f"taxonomy file not found: {path}") from None
        raw = yaml.safe_load(raw_bytes) or {}
        types = raw.get("feedback_types")
        if not isinstance(types, dict) or not types:
            raise TaxonomyError(f"{path}: needs a 'feedback_types' mapping (e.g. complaint, compliment)")
        themes, seen = [], {}
        for ftype, body in types.items():
            for name, spec in ((body or {}).get("themes") or {}).items():
                spec = spec or {}
                if isinstance(spec, str):
                    spec = {"definition": spec}
                subs = {str(k): str(v) for k, v in (spec.get("sub_themes") or {}).items()}
                for label in [name, *subs]:
                    if label in seen:
                        raise TaxonomyError(f"{path}: label '{label}' is defined twice ({seen[label]} and {ftype})")
                    seen[label] = ftype
                themes.append(
                    Theme(str(name), str(ftype), str(spec.get("definition", "")), subs, str(spec.get("label") or ""))
                )
        if not themes:
            raise TaxonomyError(f"{path}: defines no themes")
        return cls(
            name=str(raw.get("name", path.stem)),
            version=str(raw.get("version", "1")),
            themes=tuple(themes),
            source_sha256=hashlib.sha256(raw_bytes).hexdigest(),
            examples=_examples(raw.get("examples"), seen, path),
        )

    @property
    def theme_names(self) -> list[str]:
        return [t.name for t in self.themes]

    @property
    def feedback_types(self) -> list[str]:
        return list(dict.fromkeys(t.feedback_type for t in self.themes))

    def feedback_type_of(self) -> dict[str, str]:
        """Theme name -> feedback type (complaint, compliment, ...)."""
        return {t.name: t.feedback_type for t in self.themes}

    def labels(self) -> dict[str, str]:
        """Theme id -> the name reports show (its ``label``, else the id in sentence case)."""
        return {t.name: t.display_name for t in self.themes}

    def roll_up(self) -> dict[str, str]:
        """Every known label (theme or sub-theme) -> its theme."""
        mapping = {t.name: t.name for t in self.themes}
        for t in self.themes:
            mapping.update({sub: t.name for sub in t.sub_themes})
        return mapping

    def example_rows(self) -> pd.DataFrame:
        """The taxonomy's example texts as training rows: ``text``, ``theme`` (rolled up) and
        ``sub_label`` (the theme or sub-theme the example was listed under)."""
        labels = [label for label, _ in self.examples]
        return pd.DataFrame(
            {
                "text": [text for _, text in self.examples],
                "theme": [self.roll_up()[label] for label in labels],
                "sub_label": labels,
            },
            dtype=object,
        )

    def resolve_labels(self, labels: pd.Series, *, multi_label: bool, source: str = "input") -> pd.Series:
        """Roll labels up to themes; unknown labels raise an error naming the row.

        ``labels`` holds one label per row, or ``;``-separated labels when ``multi_label``.
        Returns the same shape, with theme names (multi-label rows re-joined with ``;``).
        """
        mapping = self.roll_up()
        resolved = []
        for row, value in labels.items():
            parts = [p.strip() for p in str(value).split(";")] if multi_label else [str(value).strip()]
            parts = [p for p in parts if p]
            unknown = [p for p in parts if p not in mapping]
            if unknown or not parts:
                what = f"unknown theme {unknown[0]!r}" if unknown else "empty label"
                raise TaxonomyError(
                    f"{source} row {row}, column {labels.name!r}: {what}; known themes: {', '.join(self.theme_names)}"
                )
            themes = list(dict.fromkeys(mapping[p] for p in parts))
            resolved.append(";".join(themes))
        return pd.Series(resolved, index=labels.index, name=labels.name)


def _examples(raw, known: dict, path: Path) -> tuple[tuple[str, str], ...]:
    """``examples: {theme or sub-theme: [text, ...]}`` as (label, text) pairs, checked."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise TaxonomyError(f"{path}: 'examples' must map a theme or sub-theme to a list of texts")
    pairs = []
    for label, texts in raw.items():
        if str(label) not in known:
            raise TaxonomyError(f"{path}: examples given for {label!r}, which is not a theme or sub-theme")
        if not isinstance(texts, list):
            raise TaxonomyError(f"{path}: examples of {label!r} must be a list of texts")
        pairs.extend((str(label), str(t).strip()) for t in texts if str(t or "").strip())
    return tuple(pairs)


@dataclass(frozen=True)
class Crosswalk:
    """Maps another framework onto council themes, split by polarity, with a reason each: by the
    framework theme a row's code belongs to (``group_column``), with per-code exceptions."""

    framework: str
    source_column: str
    group_column: str | None
    polarity_column: str | None
    group_targets: dict[tuple[str, str], str | None]  # (framework theme, feedback type) -> target or None
    code_targets: dict[tuple[str, str], str | None]  # (code, feedback type) -> target or None: exceptions
    reasons: dict[str, str]  # framework theme or code -> why

    @classmethod
    def from_file(cls, path: str | Path) -> Crosswalk:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise TaxonomyError(f"crosswalk file not found: {path}") from None
        polarity = raw.get("polarity") or {}
        reasons: dict[str, str] = {}

        def decisions(section: str, key: str) -> dict:
            targets = {}
            for i, m in enumerate(raw.get(section) or [], start=1):
                if key not in m or "reason" not in m:
                    raise TaxonomyError(f"{path}: {section} entry {i} needs '{key}' and 'reason'")
                reasons[str(m[key])] = str(m["reason"])
                targets.update({(str(m[key]), t): m[t] for t in ("complaint", "compliment") if t in m})
            return targets

        # Per-code decisions: "codes"; "mappings" and "exceptions" are earlier names, kept so
        # older files still load.
        group_targets = decisions("groups", "group")
        code_targets = {
            **decisions("mappings", "code"),
            **decisions("exceptions", "code"),
            **decisions("codes", "code"),
        }
        if group_targets and not raw.get("group_column"):
            raise TaxonomyError(f"{path}: 'groups' need a 'group_column' naming the framework's theme column")
        return cls(
            framework=str(raw.get("framework", path.stem)),
            source_column=str(raw.get("source_column", "code")),
            group_column=raw.get("group_column"),
            polarity_column=polarity.get("column"),
            group_targets=group_targets,
            code_targets=code_targets,
            reasons=reasons,
        )

    def check_against(self, taxonomy: Taxonomy) -> None:
        known = taxonomy.roll_up()
        targets = [*self.group_targets.values(), *self.code_targets.values()]
        bad = sorted({t for t in targets if t is not None and t not in known})
        if bad:
            raise TaxonomyError(f"crosswalk {self.framework}: targets not in taxonomy {taxonomy.name}: {bad}")

    def apply(self, frame: pd.DataFrame, taxonomy: Taxonomy, label_column: str = "theme") -> pd.DataFrame:
        """Rows mapped to council themes in ``label_column``; rows that do not map are dropped.

        A code listed as an exception takes its own decision for that polarity; any other row
        takes its framework theme's. Polarity: a negative value in the polarity column is a
        complaint, a positive one a compliment; zero (neutral) and non-numeric values have no
        polarity and are dropped.
        """
        self.check_against(taxonomy)
        for column in filter(None, [self.source_column, self.group_column]):
            if column not in frame.columns:
                raise TaxonomyError(f"crosswalk {self.framework}: input has no column {column!r}")
        codes = frame[self.source_column].astype(str).str.strip()
        if self.polarity_column:
            score = pd.to_numeric(frame[self.polarity_column], errors="coerce")
            polarity = pd.Series(pd.NA, index=frame.index, dtype="object")
            polarity[score < 0] = "complaint"
            polarity[score > 0] = "compliment"
        else:
            polarity = pd.Series("complaint", index=frame.index, dtype="object")
        polarity = polarity.astype("object")
        target = _lookup(self.code_targets, codes, polarity)
        if self.group_column:
            groups = frame[self.group_column].astype(str).str.strip()
            listed = pd.MultiIndex.from_arrays([codes, polarity]).isin(list(self.code_targets))
            target = np.where(listed, target, _lookup(self.group_targets, groups, polarity))
        decided = pd.MultiIndex.from_arrays([codes, polarity]).isin(list(self.code_targets))
        if self.group_column:
            decided |= pd.MultiIndex.from_arrays([groups, polarity]).isin(list(self.group_targets))
        undecided = codes[~decided & polarity.notna().to_numpy()]
        if len(undecided):  # framework codes, not personal data: safe to name
            log.warning(
                "crosswalk has no decision for some codes; their rows are dropped",
                extra={"fields": {"crosswalk": self.framework, "rows": len(undecided),
                                  "codes": sorted(set(undecided))[:20]}},
            )  # fmt: skip
        out = frame.assign(**{label_column: target})
        out = out[out[label_column].notna()].copy()
        out[label_column] = out[label_column].map(taxonomy.roll_up())
        return out


def _lookup(targets: dict, keys: pd.Series, polarity: pd.Series) -> np.ndarray:
    """Each row's target for its (key, polarity); None where the pair is not listed."""
    table = pd.Series(targets, dtype="object")
    if table.empty:
        return np.full(len(keys), None, dtype=object)
    return table.reindex(pd.MultiIndex.from_arrays([keys, polarity])).to_numpy()
