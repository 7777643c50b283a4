"""The README stays short and its links lead somewhere; the rest lives in docs/."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 250


def test_the_readme_is_at_most_250_lines():
    """What it is, install, one example per HTTP client, the providers, links."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_LINES, f"README.md has {len(lines)} lines: move some into docs/"


def test_every_relative_link_of_the_readme_exists():
    """Links into the documentation point at files that are there."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://)([^)#]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing


def test_every_english_page_has_a_portuguese_one():
    """docs/<page>.md and docs/pt-BR/<page>.md come in pairs."""
    english = {path.name for path in (ROOT / "docs").glob("*.md")}
    portuguese = {path.name for path in (ROOT / "docs" / "pt-BR").glob("*.md")}
    assert english == portuguese
