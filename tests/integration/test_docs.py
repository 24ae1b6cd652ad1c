"""
The documentation: its example programs run and print what the pages say,
the facts its pages state match the code, and it builds with Sphinx with
warnings as errors, every public name in its API reference.

The examples run as a user runs them: ``python docs/examples/NAME.py``, in a
process of their own.  The build needs Sphinx and furo, which the ``docs``
tox environment installs (and CI builds the docs there too); where they are
not installed, the build test is skipped.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import unavailable
from twisted_mesh import Limits
from twisted_mesh._cli.main import CLIENTS
from twisted_mesh.service import MeshService
from twisted_mesh.tap import Options

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
PAGES = sorted(DOCS.rglob("*.rst"))
EXAMPLE_TIMEOUT = 60.0
CHROMIUM = os.environ.get("TWISTED_MESH_CHROMIUM", "/usr/bin/chromium")

#: Examples whose output varies (log lines with times, IDs and ports): the
#: lines their output must contain.  The others print exactly their ``.out``.
EXPECTED_LINES = {
    "mismatch.py": [
        "connect() failed: the peer speaks protocol ",
        "routing table empty: True",
        "closing the connection to ",
    ],
}

#: Examples that run until stopped, tested on their own.
SERVERS = {"serve_page.py"}

#: The public modules, whose public names the API reference must document.
PUBLIC_MODULES = [
    "twisted_mesh",
    "twisted_mesh.flags",
    "twisted_mesh.socket",
    "twisted_mesh.service",
    "twisted_mesh.message",
    "twisted_mesh.errors",
    "twisted_mesh.keys",
    "twisted_mesh.limits",
    "twisted_mesh.tls",
    "twisted_mesh.websocket",
    "twisted_mesh.web",
    "twisted_mesh.web.status",
    "twisted_mesh.tap",
]


def _env() -> dict[str, str]:
    """The environment of an example: this checkout's package first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )


# --- the examples ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(path.name for path in EXAMPLES.glob("*.py") if path.name not in SERVERS))
def test_example_runs(name: str) -> None:
    """The example ends on its own, with status 0, printing what the docs show."""
    result = _run(EXAMPLES / name)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    expected_output = EXAMPLES / name.replace(".py", ".out")
    if expected_output.exists():
        assert result.stdout == expected_output.read_text(encoding="utf-8")
    else:
        assert name in EXPECTED_LINES, f"{name} has neither a .out file nor expected lines"
        for line in EXPECTED_LINES[name]:
            assert line in result.stdout, f"{name} did not print {line!r}:\n{result.stdout}"


def test_browser_example() -> None:
    """
    serve_page.py serves browser.html; in a headless Chromium the page joins
    the mesh, says hello to the Python node, and shows its answer.
    """
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (set TWISTED_MESH_CHROMIUM)")
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "serve_page.py"), "0"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        match = re.search(r"open (http://\S+)", first)
        assert match, f"serve_page.py printed {first!r}"
        dom = ""
        for _ in range(3):  # a loaded machine may be slow to answer
            dom = subprocess.run(
                [
                    CHROMIUM,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    match.group(1),
                ],
                capture_output=True,
                text=True,
                timeout=EXAMPLE_TIMEOUT,
            ).stdout
            if '[0,"hello from Python"]' in dom:
                break
        assert '<p id="state">connected</p>' in dom
        assert '[0,"hello from Python"]' in dom
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output, _ = server.communicate(timeout=EXAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert "the Python node got (0, 'hello from the browser')" in output


def test_every_example_is_in_the_docs() -> None:
    """Each example is pulled into a page, and each page's includes exist."""
    included = set()
    for page in PAGES:
        for target in re.findall(r"^\s*\.\. literalinclude:: (\S+)", page.read_text(encoding="utf-8"), re.M):
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} includes {target}, which does not exist"
            included.add(path)
    for example in EXAMPLES.iterdir():
        if example.suffix in (".py", ".html", ".out"):
            assert example.resolve() in included, f"{example.relative_to(ROOT)} is in no page"


# --- facts the pages state ------------------------------------------------------------------


def _option_names(options: Any) -> tuple[set[str], set[str]]:
    """The long and the short option names ``options`` (a `usage.Options`) takes."""
    entries = [*options.optParameters, *options.optFlags]
    known = {entry[0] for entry in entries}
    known |= {name[len("opt_") :].replace("_", "-") for name in dir(options) if name.startswith("opt_")}
    return known, {entry[1] for entry in entries if entry[1]}


def _check_options(pages: list[Path], command: str, options_of: Callable[[str], Any]) -> int:
    """
    Check that each option the pages give a command (``command`` is a regex
    whose first group names the command, its second the rest of the line)
    is one it takes; return how many were checked.
    """
    seen = 0
    for page in pages:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        for name, rest in re.findall(command, text):
            known, short = _option_names(options_of(name))
            for option in re.findall(r"(?<![\w-])--([a-z][a-z-]*)", rest):
                seen += 1
                assert option in known, f"{page.relative_to(ROOT)}: {name} has no --{option}"
            for option in re.findall(r"(?<![\w-])-([a-zA-Z])\b", rest):
                assert option in short, f"{page.relative_to(ROOT)}: {name} has no -{option}"
    return seen


def test_twistd_options_exist() -> None:
    """Every option given to ``twistd mesh`` in the docs is one it has."""
    command = r"(twistd(?: -n)? mesh|python -m twisted_mesh)\b([^\n`]*)"
    assert _check_options(PAGES, command, lambda name: Options()) > 10


def test_twisted_mesh_options_exist() -> None:
    """Every option given to a ``twisted-mesh`` command in the docs and the README is one that command has."""
    clients = {name: kind(name) for name, (kind, _) in CLIENTS.items()}
    command = r"twisted-mesh (send|listen|peers|node)\b([^\n`|]*)"
    assert _check_options([*PAGES, ROOT / "README.md"], command, lambda name: clients.get(name) or Options()) > 10


def test_limits_table_matches_the_defaults() -> None:
    """The defaults in the limits page are those of `.Limits`."""
    text = (DOCS / "limits.rst").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^   \* - ``(\w+)``\n     - ``([^`]+)``", text, re.M))
    defaults = Limits()
    assert set(rows) == set(defaults.__dataclass_fields__)
    for name, literal in rows.items():
        assert eval(literal, {}) == getattr(defaults, name), f"the default of {name}"  # noqa: S307


def test_metrics_page_matches_the_code() -> None:
    """The metrics page names every metric and every /status field, and no others."""
    from twisted_mesh._service import status as status_report
    from twisted_mesh.web.status import metrics_text

    text = (DOCS / "metrics.rst").read_text(encoding="utf-8")
    node = MeshService()  # not started: no sockets
    status = node.status()
    families = set(re.findall(r"^# TYPE (\S+) ", metrics_text(node), re.M))
    assert families == set(re.findall(r"^``(mesh_\w+)``", text, re.M))
    documented = set(re.findall(r"``(\w+)``", text))
    assert set(status) <= documented
    assert set(status["protocol"]) <= documented
    # The keys of a peer's entry, as MeshService.status writes them.
    keys = set(re.findall(r'^\s+"(\w+)": ', inspect.getsource(status_report), re.M))
    peer_keys = keys - set(status) - set(status["protocol"])
    assert {"direction", "transport", "ids"} <= peer_keys <= documented


# --- the build ------------------------------------------------------------------------------


def _inventory(path: Path) -> set[str]:
    """The names in a Sphinx ``objects.inv``."""
    data = path.read_bytes()
    for _ in range(4):  # the header
        data = data[data.index(b"\n") + 1 :]
    return {line.split(" ", 1)[0] for line in zlib.decompress(data).decode("utf-8").splitlines() if line}


def _public_names(module: Any) -> list[str]:
    """A module's ``__all__``, or else the public names its source defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(inspect.getsource(module))
    names = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


def _resolve(name: str) -> Any:
    """The object a dotted name documents, or ``None``."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            value = getattr(value, part, None)
        return value
    return None


def test_sphinx_build(tmp_path: Path) -> None:
    """
    ``sphinx-build -W`` builds the docs (as ``tox -e docs`` does), and its
    API reference documents every public name.
    """
    pytest.importorskip("sphinx", reason="Sphinx is not installed here: `tox -e docs` builds the docs")
    pytest.importorskip("furo", reason="furo is not installed here: `tox -e docs` builds the docs")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    documented = _inventory(out / "objects.inv")
    documented_objects = {id(_resolve(name)) for name in documented if name.startswith("twisted_mesh")}
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in _public_names(module):
            value = getattr(module, name)
            by_identity = (inspect.isclass(value) or inspect.isfunction(value) or inspect.ismodule(value)) and id(
                value
            ) in documented_objects
            if f"{module_name}.{name}" not in documented and not by_identity:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"not in the API reference: {', '.join(missing)}"
