"""
Benchmarks of twisted_mesh against the reference nodes (js2p, py2p) and a raw
Twisted relay.  Run them all with ``python -m bench``; see ``bench/README.md``.

These are measurements, not tests: nothing here is collected by pytest.
"""
