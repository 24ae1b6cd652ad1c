"""
``python -m twisted_mesh [COMMAND] [options]``: the ``twisted-mesh``
command (see `twisted_mesh._cli`); with no command, or options first, a node
in the foreground, as ``twistd -n mesh [options]`` runs it.
"""

from __future__ import annotations

from twisted_mesh._cli.main import main

if __name__ == "__main__":
    main(prog="python -m twisted_mesh")
