"""Benchmarks: the bridge beside automerge-repo's sync server and the Automerge core floor.

Run ``python -m bench --quick`` (smoke, about a minute) or ``python -m bench``
(full). See bench/README.md.
"""
