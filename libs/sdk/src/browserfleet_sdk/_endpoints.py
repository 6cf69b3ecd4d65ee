"""The calls that are one request each (`_calls`), listed once for both clients."""

from __future__ import annotations

from . import _calls as calls
from ._calls import Endpoint


class ApiCalls:
    """Mixed into `BrowserfleetClient` and `AsyncBrowserfleetClient`: each `Endpoint` is a method there, the
    async client's awaitable."""

    me = Endpoint(calls.me)
    create_task = Endpoint(calls.create_task)
    get_task = Endpoint(calls.get_task)
    list_tasks = Endpoint(calls.list_tasks)
    cancel_task = Endpoint(calls.cancel_task)
    task_logs = Endpoint(calls.task_logs)
    list_artifacts = Endpoint(calls.list_artifacts)
    download_artifact = Endpoint(calls.download_artifact)
    put_credential = Endpoint(calls.put_credential)
    list_credentials = Endpoint(calls.list_credentials)
    delete_credential = Endpoint(calls.delete_credential)
    update_credential = Endpoint(calls.update_credential)
    delete_credential_by_id = Endpoint(calls.delete_credential_by_id)
    create_webhook = Endpoint(calls.create_webhook)
    list_webhooks = Endpoint(calls.list_webhooks)
    delete_webhook = Endpoint(calls.delete_webhook)
    list_deliveries = Endpoint(calls.list_deliveries)
    get_webhook = Endpoint(calls.get_webhook)
    update_webhook = Endpoint(calls.update_webhook)
    get_delivery = Endpoint(calls.get_delivery)
    replay_delivery = Endpoint(calls.replay_delivery)
    replay_failed = Endpoint(calls.replay_failed)
    get_replay_job = Endpoint(calls.get_replay_job)
    send_test_event = Endpoint(calls.send_test_event)
    rotate_webhook_secret = Endpoint(calls.rotate_webhook_secret)
    create_worker_invite = Endpoint(calls.create_worker_invite)
    list_workers = Endpoint(calls.list_workers)
    drain_worker = Endpoint(calls.drain_worker)
    revoke_worker = Endpoint(calls.revoke_worker)
    create_api_key = Endpoint(calls.create_api_key)
    list_api_keys = Endpoint(calls.list_api_keys)
    revoke_api_key = Endpoint(calls.revoke_api_key)
    health = Endpoint(calls.health)
