"""
Sphinx configuration of twisted_mesh's documentation.

Build it with ``tox -e docs``, or from the checkout's root::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Docstring markup
----------------
twisted_mesh's docstrings are written as Twisted's are: epytext inline markup
(``L{name}``, ``C{code}``, ``B{bold}``, ``I{italic}``) inside reStructuredText
fields (``:param x:``, ``:ivar x:``, ``:return:``, ``:raise X:``).  autodoc
reads reStructuredText only, and pydoctor (which reads epytext) would render
the API as a second site in its own theme, so the API reference is made by
autodoc and :func:`epytext_to_rst` below, an ``autodoc-process-docstring``
hook, turns the inline markup into reStructuredText first:

- ``C{x}`` becomes an inline literal (``x`` in double backquotes);
- ``L{x}`` becomes ``:py:obj:`.x```: the leading dot makes Sphinx look ``x``
  up in the current module and class first, then as the last part of any
  documented name, so ``L{MeshService}`` and ``L{flags.whisper}`` link to
  ``twisted_mesh.MeshService`` and ``twisted_mesh.flags.whisper`` from any
  page.  A name that is not documented here (Twisted's, ``None``) is shown as
  code, with no link and no warning;
- ``B{x}`` and ``I{x}`` become ``**x**`` and ``*x*``.

Literal blocks (after ``::``) are left as they are.

Two more things autodoc needs help with: a module constant with no ``#:``
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
import re
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

# -- epytext inline markup --------------------------------------------------

_MARKUP = re.compile(r"(?<![A-Za-z0-9_])([LCBIU])\{")
# Characters reStructuredText accepts right before and after inline markup.
_BEFORE = set(" \t\n'\"([{<-/:")
_AFTER = set(" \t\n'\")]}>-/:.,;!?\\")


def _inline(text: str) -> str:
    """Convert the epytext inline markup of one piece of running text."""
    out: list[str] = []
    at = 0
    while True:
        match = _MARKUP.search(text, at)
        if match is None:
            out.append(text[at:])
            return "".join(out)
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:  # not closed: not markup
            out.append(text[at:])
            return "".join(out)
        out.append(text[at : match.start()])
        tag, inner = match.group(1), text[match.end() : end - 1]
        if tag == "C":
            markup = f"``{inner}``"
        elif tag == "L":
            label, sep, target = inner.rpartition("<")
            if sep and target.endswith(">"):
                markup = f":py:obj:`{label.strip()} <.{target[:-1].strip()}>`"
            elif inner == "None":
                markup = "``None``"
            else:
                markup = f":py:obj:`.{inner}`"
        elif tag == "B":
            markup = f"**{inner}**"
        elif tag == "I":
            markup = f"*{inner}*"
        else:  # U{url}
            markup = inner
        before = out[-1][-1:] if out and out[-1] else ""
        if before and before not in _BEFORE:
            markup = "\\ " + markup
        after = text[end : end + 1]
        if after and after not in _AFTER:
            markup += "\\ "
        out.append(markup)
        at = end


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def epytext_to_rst(lines: list[str]) -> list[str]:
    """
    Convert the epytext inline markup of a docstring's lines, leaving its
    literal blocks alone.  Markup may span lines within a paragraph.
    """
    result: list[str] = []
    paragraph: list[str] = []
    literal_indent: int | None = None  # the indentation of the ``::`` paragraph

    def flush() -> None:
        if paragraph:
            result.extend(_inline("\n".join(paragraph)).split("\n"))
            paragraph.clear()

    for line in lines:
        if literal_indent is not None:
            if not line.strip() or _indent(line) > literal_indent:
                result.append(line)
                continue
            literal_indent = None
        if not line.strip():
            flush()
            result.append(line)
            continue
        if not paragraph:
            paragraph_indent = _indent(line)
        paragraph.append(line)
        if line.rstrip().endswith("::"):
            flush()
            literal_indent = paragraph_indent
    flush()
    return result


_VALUE_TYPES = (int, float, str, bytes, tuple, frozenset)


def _process_docstring(app: Any, what: str, name: str, obj: object, options: Any, lines: list[str]) -> None:
    # A constant with no doc comment of its own (``#:``) gets its type's
    # docstring ("int([x]) -> integer..."): drop that.
    if what in ("data", "attribute") and isinstance(obj, _VALUE_TYPES):
        own = inspect.cleandoc(type(obj).__doc__ or "")
        if "\n".join(lines).strip() == own.strip():
            lines.clear()
            return
    lines[:] = epytext_to_rst(lines)


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
