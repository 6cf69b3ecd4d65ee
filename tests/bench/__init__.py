"""The benchmark suite (`make bench`): the platform against its peers, measured in one run on one machine.

Kept apart from the tests: only `test_quick.py` runs here under `make test`, and it checks that the quick
mode still writes sane figures, never how fast they are.
"""
