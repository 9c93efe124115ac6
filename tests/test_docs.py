"""The API reference (mkdocs.yml, docs/api/) documents every public name: each name the package root
exports, and every public method and property of its classes, has a docstring; every subpackage has
its page."""

import inspect
from pathlib import Path

import ada2i_fast

REPOSITORY = Path(__file__).resolve().parents[1]


def _undocumented(name: str, obj) -> list[str]:
    missing = [] if inspect.getdoc(obj) else [name]
    if inspect.isclass(obj):
        for attr, value in vars(obj).items():
            value = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not attr.startswith("_") and (isinstance(value, property) or inspect.isfunction(value)):
                missing += [] if (value.__doc__ or "").strip() else [f"{name}.{attr}"]
    return missing


def test_every_name_the_package_exports_has_a_docstring():
    assert [m for name in ada2i_fast.__all__ for m in _undocumented(name, getattr(ada2i_fast, name))] == []


def test_every_subpackage_has_a_page_in_the_api_reference():
    pages = " ".join(page.read_text() for page in (REPOSITORY / "docs" / "api").glob("*.md"))
    subpackages = {p.parent.name for p in (REPOSITORY / "ada2i_fast").glob("*/__init__.py")} | {"kernels"}
    assert [s for s in sorted(subpackages) if f"::: ada2i_fast.{s}\n" not in pages] == []
