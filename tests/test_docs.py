"""The docstring examples run, and the README documents what users see."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from helpers import Model, make_trainer, read_events

import lightning_radam
import lightning_radam.callbacks
from lightning_radam.callbacks import GradientHistogramMonitor, RectificationMonitor

MODULES = sorted(
    {
        m.name
        for package in (lightning_radam, lightning_radam.callbacks)
        for m in pkgutil.iter_modules(package.__path__, package.__name__ + ".")
    }
    | {"lightning_radam", "lightning_radam.callbacks"}
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_public_names_are_exported():
    for name in ("RAdam", "RAdamMixin", "RectificationStats", "radam", "__version__"):
        assert hasattr(lightning_radam, name)


def readme_tag_patterns():
    """The tags of the README's table, as regular expressions ({opt}, {g}, {name}, {prefix} filled in)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    tags = re.findall(r"^\| `([^`]+)` \| (?:Rectification|Histogram)", readme, flags=re.MULTILINE)
    fill = {
        "{opt}": "(optimizer\\d+/)?",
        "{g}": "\\d+",
        "{name}": "[^/]+",
        "{prefix}": "grad",
        "{q}": "p(01|10|50|90|99)",
    }
    patterns = []
    for tag in tags:
        pattern = re.escape(tag)
        for placeholder, regex in fill.items():
            pattern = pattern.replace(re.escape(placeholder), regex)
        patterns.append((tag, re.compile(pattern + "$")))
    return patterns


def test_readme_lists_exactly_the_tags_the_monitors_log(tmp_path):
    patterns = readme_tag_patterns()
    assert len(patterns) >= 10  # the table was found
    monitors = [RectificationMonitor(layers="weight"), GradientHistogramMonitor(layers="weight")]
    trainer = make_trainer(tmp_path, monitors, max_steps=7)  # RAdam rectifies from step 6
    trainer.fit(Model())
    events = read_events(trainer.logger.log_dir)
    logged = [
        tag
        for kind in ("scalars", "histograms", "images")
        for tag in events.Tags()[kind]
        if tag.startswith(("radam/", "grad/"))
    ]
    for tag in logged:
        assert any(pattern.match(tag) for _, pattern in patterns), f"{tag} is logged but not in the README"
    for tag, pattern in patterns:
        assert any(pattern.match(logged_tag) for logged_tag in logged), f"{tag} is in the README but never logged"


ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCED_CODE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", flags=re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title"), ![alt](...)
HTML_LINK = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)=\"([^\"]+)\"", flags=re.IGNORECASE)


def heading_anchors(path):
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation dropped, spaces to -), and ids."""
    text = FENCED_CODE.sub("", path.read_text())  # a '#' line in a code block is not a heading
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE):
        heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors | set(re.findall(r"<a\s[^>]*?(?:id|name)=\"([^\"]+)\"", text))


def relative_links(path):
    """Targets of the links and images of a Markdown file that are not URLs (code spans and blocks excluded)."""
    text = INLINE_CODE.sub("", FENCED_CODE.sub("", path.read_text()))
    links = LINK.findall(text) + HTML_LINK.findall(text)
    return [link for link in links if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", link)]  # http:, https:, mailto:


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_and_images_resolve(path):
    broken = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        target_path = (path.parent / target).resolve() if target else path
        if not target_path.exists():
            broken.append(f"{link} (no such file)")
        elif anchor and target_path.suffix == ".md" and anchor not in heading_anchors(target_path):
            broken.append(f"{link} (no heading #{anchor} in {target_path.relative_to(ROOT)})")
    assert not broken, f"{path.relative_to(ROOT)}: broken links: " + ", ".join(broken)
