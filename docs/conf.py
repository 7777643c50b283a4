"""Sphinx settings of chaveiro's documentation site (``scripts/docs`` builds it into ``site/``).

Markdown pages (MyST); the API reference is generated from the docstrings and type
hints of the public names. Every warning is an error (``-W --keep-going``) and every
cross-reference must resolve (nitpicky): a broken link or a docstring that does not
render fails the build.
"""

from __future__ import annotations

import logging

import chaveiro
from chaveiro._version import __version__

project = "chaveiro"
author = "chaveiro's authors"
copyright = "chaveiro's authors, MIT license"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
language = "en"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# The guide's toctrees name two pages as glob patterns (dpo[p], client-assertion[s]): a page
# that is not written yet is left out instead of failing the build, and is listed in its
# place as soon as it is. Only those two patterns may match nothing (see setup below).
_PAGES_TO_COME = ("'dpo[p]'", "'client-assertion[s]'")

nitpicky = True
# Without network access there are no intersphinx inventories: names from other
# libraries and from the standard library render as text. Everything of chaveiro's
# own must resolve.
nitpick_ignore_regex = [
    (r"py:.*", r"(requests|httpx|httpx2|aiohttp|redis|ssl|typing_extensions)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|datetime|pathlib|os|contextlib|time)\..*"),
    (r"py:class", r"(str|bytes|int|float|bool|object|None|type|dict|tuple|list)"),
    (r"py:class", r"(Path|Self|Unpack|Any|Callable|Iterable|Iterator|Mapping)"),
    (r"py:class", r"(AbstractContextManager|AbstractAsyncContextManager|AsyncIterator)"),
    (r"py:class", r"(Exception|ValueError|TypeError|BaseException)"),
    (r"py:class", r"(pytest\.)?MonkeyPatch|_pytest\..*"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_type_aliases = {"Clock": "chaveiro._token.Clock"}

html_theme = "furo"
html_title = f"chaveiro {__version__}"
html_static_path: list[str] = []
html_show_sourcelink = False
html_last_updated_fmt = None

assert chaveiro.__version__ == __version__


class _PageToCome(logging.Filter):
    """Drops the warning that a page named in _PAGES_TO_COME does not exist yet."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("toctree glob pattern")
            and any(pattern in message for pattern in _PAGES_TO_COME)
        )


def setup(app: object) -> None:
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_PageToCome())
