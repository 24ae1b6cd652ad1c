"""
The layers of docs/hacking.rst, held against the code: a module imports
only from its own layer or the layers before it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "twisted_mesh"

#: Each module's layer, by the first match of its dotted name's start.
LAYERS = [
    (
        1,
        ("_ids", "_serial", "_compression", "_frames", "_awaiting", "_logs", "flags", "limits", "errors")
        + ("keys", "_signing", "message", "_stats", "_admission"),
    ),
    (2, ("_core",)),
    (3, ("_link", "_websocket", "websocket")),
    (4, ("_service", "tls", "service")),
    (5, ("socket", "web", "tap", "_twistd", "_cli", "__main__", "__init__")),
]


def layer_of(module: str) -> int:
    """The layer of ``module``, a name relative to the package (``_core.seen``)."""
    first = module.split(".")[0]
    for layer, names in LAYERS:
        if first in names:
            return layer
    raise AssertionError(f"twisted_mesh.{module} is in no layer of docs/hacking.rst")


def imports_of(path: Path) -> set[str]:
    """The twisted_mesh modules ``path`` imports, relative to the package, wherever the import stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("twisted_mesh"):
            base = node.module.removeprefix("twisted_mesh").lstrip(".")
            if base:
                found.add(base)
            else:  # from twisted_mesh import flags, _compression
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.removeprefix("twisted_mesh.")
                for alias in node.names
                if alias.name.startswith("twisted_mesh.")
            )
    return found


MODULES = sorted(path for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" or path.parent == PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_import_runs_back_up(path: Path) -> None:
    """Every twisted_mesh module imports only its own layer or earlier ones."""
    relative = path.relative_to(PACKAGE).with_suffix("")
    module = ".".join(relative.parts)
    own = layer_of(module)
    later = {name: layer_of(name) for name in imports_of(path) if layer_of(name) > own}
    assert not later, f"twisted_mesh.{module} (layer {own}) imports later layers: {later}"


def test_the_layers_name_every_module() -> None:
    """No module is left out of the map."""
    for path in MODULES:
        layer_of(".".join(path.relative_to(PACKAGE).with_suffix("").parts))
