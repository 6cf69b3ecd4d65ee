from browserfleet_core.migrations import run_env
from browserfleet_scheduler.models import SchedulerBase

run_env(SchedulerBase.metadata)
