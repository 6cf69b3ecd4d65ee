import importlib

from browserfleet_core.migrations import run_env

# Imported by name rather than `from browserfleet_auth.models import ...`: mypy, run over src/, would
# otherwise meet models.py under two module names (this script is not part of the package).
models = importlib.import_module("browserfleet_auth.models")
run_env(models.AuthBase.metadata)
