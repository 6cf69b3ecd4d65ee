from browserfleet_core.migrations import run_env
from browserfleet_webhooks.models import WebhooksBase

run_env(WebhooksBase.metadata)
