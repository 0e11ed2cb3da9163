"""Where card templates live and which names exist, without loading Jinja2 (config
validation needs the names; only rendering needs the engine)."""

from __future__ import annotations

from pathlib import Path

TEMPLATE_SUFFIX = ".json.j2"


def shipped_templates_dir() -> Path:
    # A wheel installs the top-level templates/ as the package data bridge/templates
    # (pyproject maps bridge.templates to templates/); a source checkout, and an editable
    # install that points at one, has only the top-level directory beside bridge/.
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def template_names(templates_dir: Path | None) -> set[str]:
    """The shipped defaults (default, legacy, text) plus every NAME.json.j2 in templates_dir."""
    dirs = [shipped_templates_dir()] + ([templates_dir] if templates_dir and templates_dir.is_dir() else [])
    return {p.name[: -len(TEMPLATE_SUFFIX)] for d in dirs for p in d.glob("*" + TEMPLATE_SUFFIX)
            if p.is_file() and p.name != TEMPLATE_SUFFIX}
