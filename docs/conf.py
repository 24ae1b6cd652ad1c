"""
Sphinx configuration of twisted_mesh's documentation.

Build it with ``tox -e docs``, or from the checkout's root::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Docstring markup
----------------
Docstrings are reStructuredText with Sphinx's field lists (``:param x:``,
``:ivar x:``, ``:return:``, ``:raise X:``).  A name in single backquotes is
a cross-reference (the default role is ``py:obj``); a leading dot, as in
`` `.MeshService` ``, makes Sphinx look the name up in the current module and
class first, then as the last part of any documented name, so it links from
any page.  A name that is not documented here (Twisted's, ``None``) is shown
as code, with no link and no warning.

Two things autodoc needs help with: a module constant with no ``#:``
comment gets its type's docstring ("int([x]) -> integer..."), which the same
hook drops, and such constants are not listed by ``automodule`` (their
``__module__`` is ``builtins``), so ``api/flags.rst`` names each flag with
``autodata``; and zope interfaces have no ``__qualname__``, which
:func:`_name_interfaces` gives them so that annotations show their names.

The build runs offline (the tests run it too), so it uses no intersphinx:
names of Twisted and the standard library are shown as code, unlinked.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive

# The package from this checkout, whether or not it is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import twisted_mesh  # noqa: E402
import twisted_mesh.tap  # noqa: E402,F401
import twisted_mesh.web  # noqa: E402,F401

project = "twisted_mesh"
author = "the twisted_mesh authors"
copyright = "the twisted_mesh authors"
release = version = twisted_mesh.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "examples"]
templates_path: list[str] = []

html_theme = "furo"
html_title = f"twisted_mesh {release}"
html_static_path: list[str] = []

# -- autodoc ----------------------------------------------------------------

default_role = "py:obj"
autodoc_member_order = "bysource"
# Types go with each parameter's text rather than into long signatures.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
# Show defaults as the source writes them (DEFAULT_LIMITS, not a long repr).
autodoc_preserve_defaults = True


def _name_interfaces() -> None:
    """
    Give zope interfaces the __qualname__ they lack: Sphinx shows an
    annotation by it, and would show IListeningPort by its repr,
    "<InterfaceClass twisted.internet.interfaces.IListeningPort>".
    """
    from zope.interface.interface import InterfaceClass

    for module in list(sys.modules.values()):
        for value in list(vars(module).values()) if module is not None else ():
            if isinstance(value, InterfaceClass) and getattr(value, "__qualname__", None) is None:
                value.__qualname__ = value.__name__


_name_interfaces()

_VALUE_TYPES = (int, float, str, bytes, tuple, frozenset)


def _process_docstring(app: Any, what: str, name: str, obj: object, options: Any, lines: list[str]) -> None:
    # A constant with no doc comment of its own (``#:``) gets its type's
    # docstring ("int([x]) -> integer..."): drop that.
    if what in ("data", "attribute") and isinstance(obj, _VALUE_TYPES):
        own = inspect.cleandoc(type(obj).__doc__ or "")
        if "\n".join(lines).strip() == own.strip():
            lines.clear()
            return


# -- the options of ``twistd mesh``, from the code ----------------------------


class TwistdMeshHelp(Directive):
    """
    ``.. twistd-mesh-help::``: the text ``twistd mesh --help`` prints, made
    from ``twisted_mesh.tap.Options`` when the docs are built.
    """

    has_content = False

    def run(self) -> list[nodes.Node]:
        from twisted_mesh.tap import Options

        text = "Usage: twistd [options] mesh [options]\n" + Options().getUsage(width=80)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


def setup(app: Any) -> dict[str, Any]:
    app.connect("autodoc-process-docstring", _process_docstring)
    app.add_directive("twistd-mesh-help", TwistdMeshHelp)
    return {"parallel_read_safe": True}
