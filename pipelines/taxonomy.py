"""The council's theme taxonomy and crosswalks from other frameworks, both read from data files.

A council edits ``data/taxonomy.yaml`` to change its themes; a crosswalk maps another
labelled framework (e.g. the NHS Friends and Family Test) onto those themes so that
public labelled text can train a council model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml


class TaxonomyError(ValueError):
    """A taxonomy or crosswalk file is malformed, or a label is not in the taxonomy."""


@dataclass(frozen=True)
class Theme:
    name: str
    feedback_type: str
    definition: str
    sub_themes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Taxonomy:
    """Themes grouped by feedback type; sub-themes roll up to their theme."""

    name: str
    version: str
    themes: tuple[Theme, ...]
    source_sha256: str = ""

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
                themes.append(Theme(str(name), str(ftype), str(spec.get("definition", "")), subs))
        if not themes:
            raise TaxonomyError(f"{path}: defines no themes")
        return cls(
            name=str(raw.get("name", path.stem)),
            version=str(raw.get("version", "1")),
            themes=tuple(themes),
            source_sha256=hashlib.sha256(raw_bytes).hexdigest(),
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

    def roll_up(self) -> dict[str, str]:
        """Every known label (theme or sub-theme) -> its theme."""
        mapping = {t.name: t.name for t in self.themes}
        for t in self.themes:
            mapping.update({sub: t.name for sub in t.sub_themes})
        return mapping

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


@dataclass(frozen=True)
class Crosswalk:
    """Maps another framework's codes, split by polarity, onto council themes, with a reason each."""

    framework: str
    source_column: str
    polarity_column: str | None
    targets: dict[tuple[str, str], str | None]  # (code, feedback type) -> council label or None
    reasons: dict[str, str]

    @classmethod
    def from_file(cls, path: str | Path) -> Crosswalk:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise TaxonomyError(f"crosswalk file not found: {path}") from None
        polarity = raw.get("polarity") or {}
        targets, reasons = {}, {}
        for i, m in enumerate(raw.get("mappings") or [], start=1):
            if "code" not in m or "reason" not in m:
                raise TaxonomyError(f"{path}: mapping {i} needs 'code' and 'reason'")
            code = str(m["code"])
            reasons[code] = str(m["reason"])
            for ftype in ("complaint", "compliment"):
                if ftype in m:
                    targets[(code, ftype)] = m[ftype]
        return cls(
            framework=str(raw.get("framework", path.stem)),
            source_column=str(raw.get("source_column", "code")),
            polarity_column=polarity.get("column"),
            targets=targets,
            reasons=reasons,
        )

    def check_against(self, taxonomy: Taxonomy) -> None:
        known = taxonomy.roll_up()
        bad = sorted({t for t in self.targets.values() if t is not None and t not in known})
        if bad:
            raise TaxonomyError(f"crosswalk {self.framework}: targets not in taxonomy {taxonomy.name}: {bad}")

    def apply(self, frame: pd.DataFrame, taxonomy: Taxonomy, label_column: str = "theme") -> pd.DataFrame:
        """Rows mapped to council themes in ``label_column``; rows that do not map are dropped.

        Polarity: a negative value in the polarity column is a complaint, a positive one a
        compliment; zero (neutral) and non-numeric values have no polarity and are dropped.
        """
        self.check_against(taxonomy)
        if self.source_column not in frame.columns:
            raise TaxonomyError(f"crosswalk {self.framework}: input has no column {self.source_column!r}")
        codes = frame[self.source_column].astype(str).str.strip()
        if self.polarity_column:
            score = pd.to_numeric(frame[self.polarity_column], errors="coerce")
            polarity = pd.Series(pd.NA, index=frame.index, dtype="object")
            polarity[score < 0] = "complaint"
            polarity[score > 0] = "compliment"
        else:
            polarity = pd.Series("complaint", index=frame.index, dtype="object")
        lookup = pd.Series(self.targets, dtype="object")
        keys = pd.MultiIndex.from_arrays([codes, polarity.astype("object")])
        target = lookup.reindex(keys).to_numpy()
        out = frame.assign(**{label_column: target})
        out = out[out[label_column].notna()].copy()
        out[label_column] = out[label_column].map(taxonomy.roll_up())
        return out
