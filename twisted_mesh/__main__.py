"""
``python -m twisted_mesh [options]``: run a node in the foreground, as
``twistd -n mesh [options]`` does.
"""

from __future__ import annotations

import sys

from twisted.scripts.twistd import run


def main() -> None:
    """Run ``twistd --nodaemon mesh`` with this command's arguments."""
    sys.argv = [sys.argv[0], "--nodaemon", "--pidfile=", "mesh", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
