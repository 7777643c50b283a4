"""niquests tests run in their own virtualenv (``nox -s niquests``), never in the main one.

niquests installs urllib3-future, which replaces urllib3: these tests are left out
of any run where niquests is not installed.
"""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("niquests") else ["test_*.py"]
