"""mkdocs hook: the site's pages from the repository's own files, so nothing is written twice.

README.md becomes the home page (its text up to the first ``##`` section) and one guide page per
section; ARCHITECTURE.md becomes the architecture page. The images those pages show are copied from
the repository, and only those (benchmarks/results/ holds far more). The API reference reads the
package from build/docs-source/ada2i_fast, a copy of its sources laid out as pip installs them
(kernels/ as ada2i_fast/kernels): mkdocstrings reads sources without importing them."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mkdocs.structure.files import File

REPOSITORY = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The text before the first ``## `` heading (outside code blocks) and each section's (title, body)."""
    intro, sections, fenced = [], [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append([line[3:].strip(), ""])
        elif sections:
            sections[-1][1] += line
        else:
            intro.append(line)
    return "".join(intro), [(title, body) for title, body in sections]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _guide() -> list[tuple[str, str, str]]:
    """(title, page path, Markdown) of each README section, its headings one level up."""
    _, sections = _sections((REPOSITORY / "README.md").read_text())
    pages = []
    for title, body in sections:
        body = re.sub(r"^###", "##", body, flags=re.MULTILINE)
        body = IMAGE.sub(lambda m: f"![{m.group(1)}](../{m.group(2)})", body)
        pages.append((title, f"guide/{_slug(title)}.md", f"# {title}\n{body}"))
    return pages


def _copy_the_installed_layout() -> None:
    package = REPOSITORY / "build" / "docs-source" / "ada2i_fast"
    if package.exists():
        shutil.rmtree(package)
    sources = shutil.ignore_patterns("__pycache__", "*.c")
    shutil.copytree(REPOSITORY / "ada2i_fast", package, ignore=sources)
    shutil.copytree(REPOSITORY / "kernels", package / "kernels", ignore=sources)


def on_startup(command, dirty):
    """Before any plugin reads its config: mkdocstrings keeps only search paths that exist then."""
    _copy_the_installed_layout()


def on_config(config):
    guide = [{title: path} for title, path, _ in _guide()]
    api = sorted(p.relative_to(REPOSITORY / "docs").as_posix() for p in (REPOSITORY / "docs" / "api").glob("*.md"))
    api.remove("api/index.md")
    config["nav"] = [{"Home": "index.md"}, {"Guide": guide}, {"Architecture": "architecture.md"},
                     {"API reference": ["api/index.md", *api]}]
    return config


def on_files(files, config):
    intro, _ = _sections((REPOSITORY / "README.md").read_text())
    pages = [("index.md", intro), ("architecture.md", (REPOSITORY / "ARCHITECTURE.md").read_text())]
    pages += [(path, text) for _, path, text in _guide()]
    for path, text in pages:
        files.append(File.generated(config, path, content=text))
        for image in IMAGE.finditer(text):
            source = image.group(2).removeprefix("../")
            files.append(File(source, src_dir=str(REPOSITORY), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
