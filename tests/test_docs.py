"""The documentation stays true: docs/configuration.md is what `recurrl keys --markdown` prints,
and the README's and docs' relative links point at files that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recurrl.app.cli import keys_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_configuration_md_is_current():
    written = (ROOT / "docs" / "configuration.md").read_text()
    assert written == keys_markdown(), "run `recurrl keys --markdown > docs/configuration.md`"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve(document):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text())
    local = [t for t in targets if "://" not in t and not t.startswith("mailto:")]
    missing = [t for t in local if not (document.parent / t).exists()]
    assert not missing, f"{document.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_experiment_file_is_a_valid_config_named_after_itself(path):
    from recurrl.config import load_config

    assert load_config(path, []).name == path.stem
