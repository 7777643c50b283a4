"""The httpx family: httpx, its maintained continuation httpx2, and the httpxyz fork.

They share one ``Auth`` protocol, so one room serves them all, and chaveiro
imports none of them: :func:`join` makes a class a subclass of each library's
``Auth`` as that library is imported (``httpx2.Client(auth=auth)`` checks
``isinstance(auth, httpx2.Auth)``), whether it was imported before chaveiro or
after. A request, a response or a client tells which library it belongs to
(:func:`library_of`), and everything else is looked up in that library.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["CORES", "LIBRARIES", "family", "join", "library_of"]

LIBRARIES = ("httpx", "httpx2", "httpxyz")
"""The libraries of the family; ``httpx2.alias_httpx()`` makes ``httpx`` one of its names."""

CORES = ("httpcore", "httpcore2", "httpcorexyz")
"""Their transports, whose exceptions reach us unwrapped in a few places."""

_joined: list[type] = []
_lock = threading.Lock()


def _join_library(module: ModuleType) -> None:
    """Make every joined class a subclass of ``module.Auth``."""
    auth = getattr(module, "Auth", None)
    if not isinstance(auth, type):
        return
    with _lock:
        for cls in _joined:
            if auth not in cls.__mro__:  # ``object`` stands in for them until the first comes
                cls.__bases__ = (*(b for b in cls.__bases__ if b is not object), auth)


class _Watcher(importlib.abc.MetaPathFinder):
    """Joins a library of the family when it is imported, after chaveiro.

    It finds nothing itself: it asks the other finders for the library's spec
    and has the loader join the library once it has run.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in LIBRARIES:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                loader: Any = spec.loader
                run = getattr(loader, "exec_module", None)
                if run is not None:

                    def exec_module(module: ModuleType, run: Any = run) -> None:
                        run(module)
                        _join_library(module)

                    loader.exec_module = exec_module  # this spec's own loader object
                return spec
        return None


_watcher = _Watcher()


def join(cls: type) -> type:
    """Make ``cls`` an ``Auth`` of every library of the family, loaded now or later."""
    with _lock:
        _joined.append(cls)
        if _watcher not in sys.meta_path:
            sys.meta_path.insert(0, _watcher)
    for name in LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            _join_library(module)
    return cls


_LIBRARY_OF: dict[type, ModuleType] = {}


def library_of(obj: object) -> ModuleType:
    """The library (module) whose request, response or client ``obj`` is."""
    kind = type(obj)
    library = _LIBRARY_OF.get(kind)
    if library is None:
        for cls in kind.__mro__:
            name = cls.__module__.partition(".")[0]
            if name in LIBRARIES and name in sys.modules:
                library = _LIBRARY_OF[kind] = sys.modules[name]
                break
        else:
            raise TypeError(f"{kind.__qualname__} is not from httpx, httpx2 or httpxyz")
    return library


def family(name: str) -> tuple[type[BaseException], ...]:
    """The exception class ``name`` of every library of the family (and its core) loaded now."""
    found: list[type[BaseException]] = []
    for library in (*LIBRARIES, *CORES):
        cls = getattr(sys.modules.get(library), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)
