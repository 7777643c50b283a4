"""The Python examples of README.md and docs/ are tests: see tests/_doc_examples.py."""

from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser
from tests._doc_examples import doc_examples_world, evaluate

__all__ = ["doc_examples_world", "pytest_collect_file"]

pytest_collect_file = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=evaluate)],
    patterns=["README.md", "docs/*.md", "docs/*/*.md"],
    fixtures=["doc_examples_world"],
    name="examples",
).pytest()
