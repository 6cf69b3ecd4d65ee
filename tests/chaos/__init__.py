"""The chaos suite (`make chaos`, `make chaos-quick`): the platform as `make dev` runs it, under load, while
its processes and servers are killed one at a time; every task must end exactly once and every event reach
the receiver.

Under `make test`: `test_chaos_quick.py` runs the quick variant, and `test_devstack.py` checks the dev
stack's supervision itself.
"""
