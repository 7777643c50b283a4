"""docs/adding-a-provider.md, followed: on a copy of the tree, Acme is added as the guide
says, and the tests that list every provider pass with it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "adding-a-provider.md"
PROVIDER_NAMES = ("stackspot", "cidadao", "bitize", "scorepositivo")


def _guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", _guide(), re.MULTILINE | re.DOTALL)


def _block(opening: str) -> str:
    (found,) = [block for block in _blocks() if block.startswith(opening)]
    return found


def _named_paths(section: str) -> set[str]:
    """The files a section of the guide names in its tables, as `path` cells."""
    text = _guide().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w./]+\.py)` \|", text, re.MULTILINE))


def _lists_every_provider(text: str) -> bool:
    lowered = text.lower()
    return all(name in lowered for name in PROVIDER_NAMES)


def test_the_guide_names_every_place_that_lists_the_providers():
    """A file of the package or the tests that names all four providers is a list of
    providers: the guide must say what to add there (or why not, for the fake server's
    dialects), or a new provider would break it."""
    named = _named_paths("2. Register it") | _named_paths("3. Test it")
    guide = _guide()
    lists = set()
    for path in [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py")]:
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("src/chaveiro/providers/") and path.name != "__init__.py":
            continue  # a provider's own module
        if _lists_every_provider(path.read_text(encoding="utf-8")):
            lists.add(relative)
    lists.discard("tests/test_adding_a_provider.py")
    missing = sorted(path for path in lists if path not in named and f"`{path}`" not in guide)
    assert not missing, f"docs/adding-a-provider.md does not say what to add in {missing}"


def _add_after(path: Path, anchor: str, text: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count(anchor) == 1, f"{anchor!r} is not once in {path}"
    path.write_text(source.replace(anchor, anchor + text), encoding="utf-8")


def _replace(path: Path, old: str, new: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(source.replace(old, new), encoding="utf-8")


def _register(tree: Path) -> dict[str, Callable[[Path], None]]:
    """What steps 2 and 3 say to add, file by file (keys: the paths the guide names)."""
    acme = "AcmeAuth(ID, SECRET, token_url=s.oauth_token_url)"
    return {
        "src/chaveiro/providers/__init__.py": lambda p: (
            _add_after(
                p,
                "from chaveiro.providers.bitize import BitizeAuth\n",
                "from chaveiro.providers.acme import AcmeAuth\n",
            ),
            _add_after(p, '"scorepositivo": ScorePositivoAuth,\n', '        "acme": AcmeAuth,\n'),
            _replace(p, '__all__ = ["PROVIDERS", ', '__all__ = ["PROVIDERS", "AcmeAuth", '),
        ),
        "src/chaveiro/__init__.py": lambda p: (
            _replace(
                p,
                "from chaveiro.providers import BitizeAuth,",
                "from chaveiro.providers import AcmeAuth, BitizeAuth,",
            ),
            _replace(p, "__all__ = [\n", '__all__ = [\n    "AcmeAuth",\n'),
            _replace(
                p,
                '"chaveiro.providers": ("BitizeAuth",',
                '"chaveiro.providers": ("AcmeAuth", "BitizeAuth",',
            ),
        ),
        "src/chaveiro/_cli.py": lambda p: (
            _add_after(p, '"scorepositivo": "SCOREPOSITIVO",\n', '    "acme": "ACME",\n'),
            _add_after(
                p,
                '"  scorepositivo  SCOREPOSITIVO_CLIENT_ID, SCOREPOSITIVO_CLIENT_SECRET\\n"\n',
                '        "  acme           ACME_CLIENT_ID, ACME_CLIENT_SECRET\\n"\n',
            ),
        ),
        "src/chaveiro/testing/pytest_plugin.py": lambda p: _add_after(
            p,
            '"OAUTH_TOKEN_URL": server.oauth_token_url,\n',
            '        "ACME_CLIENT_ID": TEST_CLIENT_ID,\n'
            '        "ACME_CLIENT_SECRET": TEST_CLIENT_SECRET,\n'
            '        "ACME_TOKEN_URL": server.oauth_token_url,\n',
        ),
        "src/chaveiro/_demo.py": lambda p: (
            _replace(
                p,
                "from chaveiro.providers import BitizeAuth,",
                "from chaveiro.providers import AcmeAuth, BitizeAuth,",
            ),
            _add_after(
                p,
                "    adapters: list[tuple[str, ClientCredentialsAuth]] = [\n",
                '        ("Acme", AcmeAuth(_DEMO_ID, _DEMO_SECRET,'
                " token_url=server.oauth_token_url)),\n",
            ),
        ),
        "tests/_doc_examples.py": lambda p: (
            _add_after(
                p,
                "            (bitize.BitizeAuth, server.bitize_token_url),\n",
                "            (acme.AcmeAuth, server.oauth_token_url),\n",
            ),
            _replace(
                p,
                "from chaveiro.providers import bitize,",
                "from chaveiro.providers import acme, bitize,",
            ),
            _add_after(
                p,
                '"OAUTH_SCOPE": "api.read",\n',
                '            "ACME_TOKEN_URL": server.oauth_token_url,\n',
            ),
            _replace(p, 'for prefix in ("CIDADAO",', 'for prefix in ("ACME", "CIDADAO",'),
        ),
        "tests/providers/test_registry.py": lambda p: (
            _replace(p, "from chaveiro import (\n", "from chaveiro import (\n    AcmeAuth,\n"),
            _add_after(
                p, '        "scorepositivo": ScorePositivoAuth,\n', '        "acme": AcmeAuth,\n'
            ),
            _add_after(
                p,
                '        ScorePositivoAuth("id", CLIENT_SECRET),\n',
                '        AcmeAuth("id", CLIENT_SECRET),\n',
            ),
            _add_after(
                p,
                "        ScorePositivoAuth: server.scorepositivo_token_url,\n",
                "        AcmeAuth: server.oauth_token_url,\n",
            ),
            _add_after(
                p,
                "def _wrong(name: str, server: FakeTokenServer) -> ClientCredentialsAuth:\n",
                '    if name == "acme":\n'
                '        return AcmeAuth("app-client", WRONG, token_url=server.oauth_token_url)\n',
            ),
        ),
        "tests/test_travel_auth.py": lambda p: (
            _replace(
                p,
                "from chaveiro.providers import PROVIDERS\n",
                "from chaveiro.providers import PROVIDERS\nfrom chaveiro import AcmeAuth\n",
            ),
            _add_after(
                p,
                "BUILDS: dict[str, Build] = {\n",
                f'    "AcmeAuth()": lambda s: {acme},\n'
                '    "AcmeAuth.from_env()": lambda s: AcmeAuth.from_env(),\n',
            ),
        ),
        "tests/typing/providers.py": lambda p: p.write_text(
            p.read_text(encoding="utf-8") + "\n\ndef with_acme() -> None:\n"
            "    from chaveiro import AcmeAuth\n\n"
            '    requests.get("https://api.example.com/", auth=AcmeAuth("id", "secret"))\n',
            encoding="utf-8",
        ),
    }


@pytest.mark.timeout(300)
def test_following_the_guide_adds_a_provider_that_passes_the_tests(tmp_path: Path):
    """Steps 1 to 3 on a copy of src/ and tests/: the provider module and its tests from
    the guide's own code, every registration it lists, then the tests it names."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")

    (tree / "src/chaveiro/providers/acme.py").write_text(_block('"""Acme: '), encoding="utf-8")
    (tree / "tests/providers/test_acme.py").write_text(_block('"""Acme against'), encoding="utf-8")
    steps = _register(tree)
    named = _named_paths("2. Register it") | _named_paths("3. Test it")
    assert set(steps) == named, "the guide's lists and what this test adds differ"
    for relative, step in steps.items():
        step(tree / relative)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(tree)])}
    env.pop("PYTEST_ADDOPTS", None)
    tests = [
        "tests/providers/test_acme.py",
        "tests/providers/test_registry.py",
        "tests/test_travel_auth.py::test_every_adapter_is_covered",
        "tests/test_travel_auth.py::test_a_copy_in_the_same_process_uses_the_held_token",
        "tests/test_cli.py::test_env_prefixes_match_the_provider_classes",
        "tests/test_cli.py::test_pytest_plugin_in_a_throwaway_project",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "AcmeAuth" in (tree / "src/chaveiro/__init__.py").read_text(encoding="utf-8")
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None
    assert int(passed.group(1)) > 20
