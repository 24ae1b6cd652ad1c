"""
The ``twisted-mesh`` command (and ``python -m twisted_mesh``): a node, and
the clients that send, listen and ask for peers through one (see
docs/cli.rst).
"""
