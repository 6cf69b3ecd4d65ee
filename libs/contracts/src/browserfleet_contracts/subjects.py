"""Every NATS subject, stream and bucket name in one place.

Services never spell a subject by hand: they import it from here, so a rename is one edit and
`proto/asyncapi.yaml` cannot disagree with the code.
"""

from __future__ import annotations

from typing import Final

# --- JetStream streams -------------------------------------------------------------------------
TASKS_STREAM: Final = "TASKS"
TASK_UPDATES_STREAM: Final = "TASK_UPDATES"
EVENTS_STREAM: Final = "EVENTS"
ARTIFACTS_BUCKET: Final = "artifacts"

DEFAULT_POOL: Final = "default"
PRIORITIES: Final = ("urgent", "high", "normal", "low")


def task_run(pool: str, priority: str) -> str:
    """`tasks.run.<pool>.<priority>`: one message per dispatch attempt (work-queue retention)."""
    return f"tasks.run.{pool}.{priority}"


def task_run_consumer(pool: str, priority: str) -> str:
    """Durable pull consumer shared by every worker of one pool, one per priority."""
    return f"pool-{pool}-{priority}"


def task_update(task_id: str) -> str:
    """`tasks.updates.<task_id>`: worker -> scheduler (started, log, result)."""
    return f"tasks.updates.{task_id}"


TASK_UPDATES_ALL: Final = "tasks.updates.*"


def task_cancel(task_id: str) -> str:
    """Core NATS signal to the worker running `task_id`."""
    return f"tasks.cancel.{task_id}"


def event(org_id: str, event_type: str) -> str:
    """`events.<org_id>.<entity>.<event>`, e.g. events.<org>.task.completed."""
    return f"events.{org_id}.{event_type}"


EVENTS_ALL: Final = "events.>"


def worker_drain(worker_id: str) -> str:
    """Core NATS request to one worker: stop taking work, finish or hand back running tasks, stay up."""
    return f"workers.drain.{worker_id}"


# --- request/reply commands: svc.<service>.<op>, queue group = service name -------------------
class Auth:
    QUEUE: Final = "auth"
    LOGIN: Final = "svc.auth.login"
    REFRESH: Final = "svc.auth.refresh"
    LOGOUT: Final = "svc.auth.logout"
    ME: Final = "svc.auth.me"
    JWKS: Final = "svc.auth.jwks"
    BOOTSTRAP: Final = "svc.auth.bootstrap"
    CREATE_API_KEY: Final = "svc.auth.create_api_key"
    LIST_API_KEYS: Final = "svc.auth.list_api_keys"
    REVOKE_API_KEY: Final = "svc.auth.revoke_api_key"
    AUTHENTICATE_API_KEY: Final = "svc.auth.authenticate_api_key"
    LIST_ORGANIZATIONS: Final = "svc.auth.list_organizations"
    CREATE_ORGANIZATION: Final = "svc.auth.create_organization"
    UPDATE_ORGANIZATION: Final = "svc.auth.update_organization"
    DELETE_ORGANIZATION: Final = "svc.auth.delete_organization"
    LIST_USERS: Final = "svc.auth.list_users"
    CREATE_USER: Final = "svc.auth.create_user"
    UPDATE_USER: Final = "svc.auth.update_user"
    LIST_AUDIT: Final = "svc.auth.list_audit"
    GET_ORG_POLICY: Final = "svc.auth.get_org_policy"
    UPDATE_ORG_POLICY: Final = "svc.auth.update_org_policy"
    # workers (and the vault on a worker's behalf), authenticated by the worker key, read an org's policy
    ORG_POLICY: Final = "svc.auth.org_policy"
    # core NATS broadcast (no queue group): every gateway replica drops the key from its cache
    API_KEY_REVOKED: Final = "auth.api_key.revoked"


class Scheduler:
    QUEUE: Final = "scheduler"
    CREATE_TASK: Final = "svc.scheduler.create_task"
    GET_TASK: Final = "svc.scheduler.get_task"
    LIST_TASKS: Final = "svc.scheduler.list_tasks"
    CLAIM: Final = "svc.scheduler.claim"
    CLAIM_INFO: Final = "svc.scheduler.claim_info"
    CANCEL_TASK: Final = "svc.scheduler.cancel_task"
    ADMIN_LIST_TASKS: Final = "svc.scheduler.admin_list_tasks"
    TASK_ATTEMPTS: Final = "svc.scheduler.task_attempts"
    TASK_LOGS: Final = "svc.scheduler.task_logs"
    CREATE_SCHEDULE: Final = "svc.scheduler.create_schedule"
    LIST_SCHEDULES: Final = "svc.scheduler.list_schedules"
    GET_SCHEDULE: Final = "svc.scheduler.get_schedule"
    UPDATE_SCHEDULE: Final = "svc.scheduler.update_schedule"
    DELETE_SCHEDULE: Final = "svc.scheduler.delete_schedule"


class Vault:
    QUEUE: Final = "vault"
    PUT_CREDENTIAL: Final = "svc.vault.put_credential"
    LIST_CREDENTIALS: Final = "svc.vault.list_credentials"
    DELETE_CREDENTIAL: Final = "svc.vault.delete_credential"
    CHECK_NAMES: Final = "svc.vault.check_names"
    RELEASE: Final = "svc.vault.release"
    PROFILE_ACQUIRE: Final = "svc.vault.profile_acquire"
    PROFILE_SAVE: Final = "svc.vault.profile_save"
    LIST_PROFILES: Final = "svc.vault.list_profiles"
    DELETE_PROFILE: Final = "svc.vault.delete_profile"


class Webhooks:
    QUEUE: Final = "webhooks"
    CREATE_ENDPOINT: Final = "svc.webhooks.create_endpoint"
    LIST_ENDPOINTS: Final = "svc.webhooks.list_endpoints"
    DELETE_ENDPOINT: Final = "svc.webhooks.delete_endpoint"
    LIST_DELIVERIES: Final = "svc.webhooks.list_deliveries"


class Workers:
    QUEUE: Final = "worker-gateway"
    CREATE_INVITE: Final = "svc.workers.create_invite"
    REGISTER: Final = "svc.workers.register"
    HEARTBEAT: Final = "svc.workers.heartbeat"
    AUTHENTICATE: Final = "svc.workers.authenticate"
    LIST: Final = "svc.workers.list"
