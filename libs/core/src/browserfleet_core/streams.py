"""The platform's JetStream streams, the artifacts object store, KV buckets and the workers' pool consumers,
declared idempotently by every service that uses them, with the replicas and storage of `StreamSettings`."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from browserfleet_contracts import subjects
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig, StreamInfo
from nats.js.errors import (
    APIError,
    BadRequestError,
    BucketNotFoundError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

if TYPE_CHECKING:
    from .settings import StreamSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a starting service keeps asking JetStream to declare its streams and consumers. A cluster that
# is still electing its meta leader answers 503 or not at all, and one whose servers are busy placing the
# replicas of streams that every service declares at once (all pods start together) answers after the
# client's 5 s: neither is a reason to exit and be restarted.
JETSTREAM_WAIT_SECONDS = 120.0
# what JetStream answers while it cannot answer yet
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (NatsTimeoutError, NoRespondersError, ServiceUnavailableError)

# a message published again with the same Nats-Msg-Id within this window is dropped (an outbox relay may
# publish a row twice)
DUPLICATE_WINDOW_SECONDS = 600.0
# how long the task-updates and events streams keep a message
KEPT_SECONDS = 7 * 86_400.0


def _stream(name: str, subject: str, retention: RetentionPolicy, **limits: Any) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=[subject],
        retention=retention,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        **limits,
    )


STREAMS = (
    _stream(subjects.TASKS_STREAM, subjects.TASKS_ALL, RetentionPolicy.WORK_QUEUE),
    _stream(
        subjects.TASK_UPDATES_STREAM, subjects.TASK_UPDATES_ALL, RetentionPolicy.LIMITS, max_age=KEPT_SECONDS
    ),
    _stream(
        subjects.EVENTS_STREAM,
        subjects.EVENTS_ALL,
        RetentionPolicy.LIMITS,
        max_age=KEPT_SECONDS,
        discard=DiscardPolicy.OLD,
    ),
)


# the settings' name of each stream (STREAM_REPLICAS_<KEY>, STREAM_STORAGE_<KEY>)
SETTING_KEYS = {
    subjects.TASKS_STREAM: "tasks",
    subjects.TASK_UPDATES_STREAM: "task_updates",
    subjects.EVENTS_STREAM: "events",
}
ARTIFACTS_STREAM = f"OBJ_{subjects.ARTIFACTS_BUCKET}"  # the stream behind the object store (nats-py's naming)
_STORAGE = {"file": StorageType.FILE, "memory": StorageType.MEMORY}


class StreamConfigError(RuntimeError):
    """NATS refused the streams as configured (e.g. 3 replicas on a single server): the message names the
    setting, and the service stops rather than run without its streams. `placement`: refused for want of
    servers to place the replicas on, which a cluster whose servers are still starting also answers."""

    def __init__(self, message: str, *, placement: bool = False) -> None:
        super().__init__(message)
        self.placement = placement


# "no suitable peers for placement": too few servers in the cluster, for now or for good
NO_PLACEMENT = 10005


def configured(config: StreamConfig, settings: StreamSettings) -> StreamConfig:
    """`config` with the replicas and storage `settings` give its stream."""
    key = SETTING_KEYS[config.name or ""]
    return replace(config, num_replicas=settings.replicas(key), storage=_STORAGE[settings.storage(key)])


async def patiently(what: str, declare: Callable[[], Awaitable[T]], *, within: float | None = None) -> T:
    """`declare()` (idempotent), asked again while JetStream cannot answer yet, for up to `within` seconds
    (default JETSTREAM_WAIT_SECONDS), and while a cluster has too few servers to place the replicas (its
    servers may still be starting); then its last error. Any other error (a refused configuration) at once."""
    deadline = time.monotonic() + (JETSTREAM_WAIT_SECONDS if within is None else within)
    delay = 0.25
    while True:
        try:
            return await declare()
        except Exception as exc:
            waiting = isinstance(exc, TRANSIENT_ERRORS) or (
                isinstance(exc, StreamConfigError) and exc.placement
            )
            if not waiting or time.monotonic() + delay > deadline:
                raise
            log.warning("JetStream cannot declare %s yet (%s); asking again in %.2f s", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_streams(
    js: JetStreamContext,
    *,
    artifact_retention_days: float | None = None,
    settings: StreamSettings | None = None,
    within: float | None = None,
) -> None:
    """Create or update the platform's streams and object store; safe to call from every service.

    Replicas and storage come from `settings` (default: STREAM_REPLICAS / STREAM_STORAGE and their per-stream
    overrides from the environment). A stream that exists is brought to them where NATS allows: the replica
    count changes in place on a cluster; the storage type never does (a warning says so, and the stream
    keeps its own). The artifacts bucket keeps objects `artifact_retention_days` (default:
    ARTIFACT_RETENTION_DAYS from the environment, 7); a bucket that exists with another max age is updated.
    While JetStream cannot answer yet (no meta leader, or too busy), it is asked again for up to `within`
    seconds (`patiently`).
    """
    await patiently(
        "the streams",
        lambda: _ensure_streams(js, artifact_retention_days=artifact_retention_days, settings=settings),
        within=within,
    )


async def _ensure_streams(
    js: JetStreamContext,
    *,
    artifact_retention_days: float | None,
    settings: StreamSettings | None,
) -> None:
    from .settings import ArtifactSettings, StreamSettings

    settings = settings or StreamSettings()
    for config in STREAMS:
        await ensure_stream(js, configured(config, settings))
    if artifact_retention_days is None:
        artifact_retention_days = ArtifactSettings().artifact_retention_days
    await ensure_artifacts_bucket(
        js,
        artifact_retention_days * 86_400.0,
        replicas=settings.replicas("artifacts"),
        storage=_STORAGE[settings.storage("artifacts")],
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> StreamInfo:
    """Create `config`'s stream, or bring the existing one to it (keeping its storage type, which NATS
    cannot change in place)."""
    try:
        return await js.add_stream(config=config)
    except ServiceUnavailableError:
        raise  # not an answer about the configuration: `patiently` asks again
    except APIError as exc:  # exists with another configuration, or refused outright
        refused = exc
    try:
        current = await js.stream_info(config.name or "")
    except NotFoundError:
        raise _config_error(config, refused) from refused
    if _name(current.config.storage) != _name(config.storage):
        log.warning(
            "stream %s is kept in %s storage: an existing stream's storage cannot change to %s (drain it, "
            "delete it and restart a service to recreate it; docs: deploy/README.md)",
            config.name,
            _name(current.config.storage),
            _name(config.storage),
        )
        config = replace(config, storage=current.config.storage)
    try:
        info = await js.update_stream(config=config)
    except ServiceUnavailableError:
        raise
    except APIError as exc:
        raise _config_error(config, exc) from exc
    if (current.config.num_replicas or 1) != (config.num_replicas or 1):
        log.info(
            "stream %s: replicas %s -> %s", config.name, current.config.num_replicas, config.num_replicas
        )
    return info


def _name(storage: StorageType | str | None) -> str:
    # nats-py hands a stream's info back with the storage as the server spelled it (a plain string)
    return StorageType(storage).value if storage is not None else StorageType.FILE.value


def _config_error(config: StreamConfig, exc: Exception) -> StreamConfigError:
    key = SETTING_KEYS.get(config.name or "", "artifacts" if config.name == ARTIFACTS_STREAM else "")
    hint = f"STREAM_REPLICAS_{key.upper()} / " if key else ""
    return StreamConfigError(
        f"NATS refused stream {config.name} with {config.num_replicas} replica(s) in {_name(config.storage)} "
        f"storage: {getattr(exc, 'description', None) or exc}. Check {hint}STREAM_REPLICAS (above 1 needs "
        "a NATS cluster with at least that many JetStream servers) and STREAM_STORAGE.",
        placement=getattr(exc, "err_code", None) == NO_PLACEMENT,
    )


async def ensure_artifacts_bucket(
    js: JetStreamContext, ttl_seconds: float, *, replicas: int = 1, storage: StorageType = StorageType.FILE
) -> None:
    """The artifacts object store with max age `ttl_seconds` and `replicas` copies, created or brought in
    line (retention and replicas; not its storage type, which NATS cannot change in place)."""
    from nats.js.api import ObjectStoreConfig

    try:
        await js.object_store(subjects.ARTIFACTS_BUCKET)
    except (NotFoundError, BadRequestError):
        try:
            await js.create_object_store(
                subjects.ARTIFACTS_BUCKET,
                config=ObjectStoreConfig(
                    storage=storage, description="task artifacts", ttl=ttl_seconds, replicas=replicas
                ),
            )
            return
        except ServiceUnavailableError:
            raise
        except APIError as exc:  # another service created it meanwhile, or NATS refused it
            try:
                await js.stream_info(ARTIFACTS_STREAM)
            except NotFoundError:
                wanted = StreamConfig(name=ARTIFACTS_STREAM, num_replicas=replicas, storage=storage)
                raise _config_error(wanted, exc) from exc
    info = await js.stream_info(ARTIFACTS_STREAM)
    current = info.config.max_age or 0.0
    changed = False
    if abs(current - ttl_seconds) >= 1.0:
        log.info(
            "artifacts bucket: retention %.0f s -> %.0f s (ARTIFACT_RETENTION_DAYS)", current, ttl_seconds
        )
        info.config.max_age = ttl_seconds
        changed = True
    if (info.config.num_replicas or 1) != replicas:
        log.info("artifacts bucket: replicas %s -> %s", info.config.num_replicas, replicas)
        info.config.num_replicas = replicas
        changed = True
    if _name(info.config.storage) != _name(storage):
        log.warning(
            "artifacts bucket is kept in %s storage: an existing bucket's storage cannot change to %s",
            _name(info.config.storage),
            _name(storage),
        )
    if changed:
        try:
            await js.update_stream(config=info.config)
        except ServiceUnavailableError:
            raise
        except APIError as exc:
            raise _config_error(info.config, exc) from exc


async def ensure_key_value(
    js: JetStreamContext,
    config: KeyValueConfig,
    *,
    settings: StreamSettings | None = None,
    within: float | None = None,
) -> KeyValue:
    """A KV bucket with the replica count of `settings` (STREAM_REPLICAS), created or brought to it. Its
    storage is the caller's choice in `config` (state worth nothing after a restart may live in memory).
    Asked again while JetStream cannot answer yet (`patiently`)."""
    return await patiently(
        f"KV bucket {config.bucket}", lambda: _ensure_key_value(js, config, settings), within=within
    )


async def _ensure_key_value(
    js: JetStreamContext, config: KeyValueConfig, settings: StreamSettings | None
) -> KeyValue:
    from .settings import StreamSettings

    replicas = (settings or StreamSettings()).replicas(config.bucket)
    config = replace(config, replicas=replicas)
    try:
        kv = await js.key_value(config.bucket)
    except (BucketNotFoundError, NotFoundError):
        try:
            return await js.create_key_value(config=config)
        except ServiceUnavailableError:
            raise
        except APIError as exc:  # another replica created it meanwhile, or NATS refused it
            try:
                return await js.key_value(config.bucket)
            except (BucketNotFoundError, NotFoundError):
                wanted = StreamConfig(
                    name=f"KV_{config.bucket}", num_replicas=replicas, storage=config.storage
                )
                raise _config_error(wanted, exc) from exc
    info = await js.stream_info(f"KV_{config.bucket}")
    if (info.config.num_replicas or 1) != replicas:
        log.info("KV bucket %s: replicas %s -> %s", config.bucket, info.config.num_replicas, replicas)
        info.config.num_replicas = replicas
        try:
            await js.update_stream(config=info.config)
        except ServiceUnavailableError:
            raise
        except APIError as exc:
            raise _config_error(info.config, exc) from exc
    return kv


async def ensure_pool_consumers(
    js: JetStreamContext, pool: str = subjects.DEFAULT_POOL, *, ack_wait: float = 30.0
) -> None:
    """One durable pull consumer per (pool, priority), shared by every worker of the pool.

    Work-queue streams forbid overlapping filters, so each priority has its own subject and consumer;
    workers poll them urgent-first. `ack_wait` is the lease: a worker extends it with in-progress acks.
    """
    from nats.js.api import AckPolicy, ConsumerConfig

    for priority in subjects.PRIORITIES:
        config = ConsumerConfig(
            durable_name=subjects.task_run_consumer(pool, priority),
            filter_subject=subjects.task_run(pool, priority),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            max_ack_pending=10_000,
        )
        try:
            await patiently(
                f"consumer {config.durable_name}",
                functools.partial(js.add_consumer, subjects.TASKS_STREAM, config=config),
            )
        except BadRequestError:
            log.debug("consumer %s exists with another config; keeping it", config.durable_name)
