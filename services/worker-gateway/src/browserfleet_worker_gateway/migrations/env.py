import importlib

from browserfleet_core.migrations import run_env

# Imported by name: mypy, run over src/, would otherwise meet models.py under two module names
# (this script is loaded by alembic, not as part of the package).
models = importlib.import_module("browserfleet_worker_gateway.models")
run_env(models.WorkersBase.metadata)
