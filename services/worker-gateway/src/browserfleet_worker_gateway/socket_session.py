"""One remote worker's socket, from WORKER_CONNECT to its close (browserfleet_contracts.worker_socket; docs/
websocket.md "Remote workers").

The key is checked first (an unknown or removed one is refused with the reason, and nothing is created: no
bus connection, no row). Then the session joins the bus as that worker, with the identity worker-gateway's
auth callout gives any worker, so everything it does for the worker is held to that worker's allow-lists. It
resumes the attempts the worker says it still runs, pulls and claims tasks for it (socket_tasks.py), and
relays its frames (socket_relay.py). A bad frame gets an ERROR naming the problem and changes nothing; too
many close the socket. A socket that dies settles nothing: an attempt the worker knew of keeps running on
the worker, and its lease (socket_leases.py) lapses unless the worker comes back in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypedDict, Unpack

from browserfleet_contracts.worker_socket import (
    AUTH_TIMEOUT_SECONDS,
    CHUNK_BYTES,
    MAX_FRAME_BYTES,
    ArtifactBegin,
    ArtifactEnd,
    ClientFrame,
    Connected,
    Drained,
    ErrorFrame,
    HandBack,
    HeartbeatFrame,
    Log,
    Progress,
    Ready,
    Reply,
    Request,
    Result,
    Security,
    SocketCloseCode,
    Started,
    WorkerConnect,
    parse_chunk_frame,
)
from browserfleet_contracts.workers import Heartbeat, RotateKeyRequest, WorkerIdentity
from browserfleet_core.errors import ServiceError, Unauthorized
from browserfleet_core.messaging import BusCredentials, RpcClient, connect
from nats.aio.client import Client as NatsClient
from prometheus_client import Counter
from pydantic import BaseModel, TypeAdapter, ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import registration, socket_relay
from .runtime import WorkerGatewayRuntime
from .socket_leases import Held
from .socket_relay import FrameRefused, Upload
from .socket_tasks import WorkerTasks

log = logging.getLogger(__name__)

FRAMES: TypeAdapter[Any] = TypeAdapter(ClientFrame)
MAX_IN_FLIGHT = 32  # frames of one socket being acted on at once
MAX_UPLOADS = 8
ABUSE_BUDGET = 20.0  # bad frames a socket may send at once...
ABUSE_REFILL_PER_SECOND = 0.2  # ...and one more every five seconds

REFUSED_FRAMES = Counter(
    "browserfleet_worker_socket_refused_frames_total", "Remote workers' frames answered with ERROR", ["code"]
)
REFUSED_CONNECTIONS = Counter(
    "browserfleet_worker_socket_refused_total", "Remote workers' sockets refused at WORKER_CONNECT", ["code"]
)


class _About(TypedDict, total=False):
    """What an ERROR frame names besides its code, message and status (ErrorFrame's defaults otherwise)."""

    id: int | None
    field: str | None
    task_id: str | None
    retryable: bool


class Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class WorkerSession:
    def __init__(
        self, rt: WorkerGatewayRuntime, ws: ServerConnection, registry: dict[str, WorkerSession]
    ) -> None:
        self.rt, self.ws, self.registry = rt, ws, registry
        self.worker: WorkerIdentity | None = None
        self.key = ""
        self.nc: NatsClient | None = None
        self.tasks: WorkerTasks | None = None
        self.uploads: dict[str, Upload] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._budget, self._budget_at = ABUSE_BUDGET, time.monotonic()

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id if self.worker is not None else "?"

    @property
    def peer(self) -> str:
        forwarded = self.ws.request.headers.get("x-forwarded-for") if self.ws.request else None
        address = self.ws.remote_address
        return str(forwarded or (address[0] if address else "?"))

    # --- the whole life of the socket -------------------------------------------------------------------
    async def serve(self) -> None:
        puller: asyncio.Task[None] | None = None
        try:
            tasks = await self._open()
            puller = asyncio.create_task(tasks.pull_loop(), name=f"pull-{self.worker_id}")
            await self._read_loop(tasks)
        except Closing as exc:
            await self.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        finally:
            await self._cleanup(puller)

    async def close(self, code: int, reason: str) -> None:
        """Ends the socket (also from outside: the worker was removed or connected again, or we stop)."""
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason[:120])

    # --- WORKER_CONNECT --------------------------------------------------------------------------------
    async def _open(self) -> WorkerTasks:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            REFUSED_CONNECTIONS.labels("auth_timeout").inc()
            raise Closing(SocketCloseCode.AUTH_TIMEOUT, "WORKER_CONNECT did not come in time") from None
        try:
            frame = self._parse(raw)
        except FrameRefused as exc:
            frame = exc
        if not isinstance(frame, WorkerConnect):
            detail = f": {frame.message}" if isinstance(frame, FrameRefused) else ""
            REFUSED_CONNECTIONS.labels("no_connect").inc()
            await self._error("out_of_order", f"the first frame must be WORKER_CONNECT{detail}", status=401)
            raise Closing(SocketCloseCode.UNAUTHORIZED, "WORKER_CONNECT expected")
        worker = await self._authenticate(frame)
        self.worker, self.key = worker, frame.api_key
        self.nc = await self._join_bus(worker)
        service_rpc = RpcClient(self.rt.broker.connection, timeout=self.rt.settings.rpc_timeout_seconds)
        self.tasks = tasks = WorkerTasks(
            worker,
            self.key,
            self.nc,
            service_rpc,
            send=self._send,
            spawn=self._spawn,
            rpc_timeout=self.rt.settings.rpc_timeout_seconds,
        )
        previous = self.registry.get(worker.worker_id)
        self.registry[worker.worker_id] = self
        if previous is not None:
            await previous.close(SocketCloseCode.REPLACED, "this worker connected again")
        resumed, lost = await tasks.resume(frame.held)
        await self._send(
            Connected(
                worker_id=worker.worker_id,
                name=worker.name,
                org_id=worker.org_id,
                pool=worker.pool,
                heartbeat_seconds=max(1.0, self.rt.settings.offline_after_seconds / 3),
                resumed=resumed,
                lost=lost,
            )
        )
        await tasks.listen_for_drain()
        tasks.set_slots(frame.slots)
        log.info(
            "remote worker %s (%s) connected from %s: %d slot(s), %d task(s) resumed, %d lost",
            worker.worker_id,
            worker.name,
            self.peer,
            frame.slots,
            len(resumed),
            len(lost),
        )
        return tasks

    async def _authenticate(self, frame: WorkerConnect) -> WorkerIdentity:
        """The key's live worker, with this process's public key registered; refused with the reason."""
        try:
            worker = await self.rt.db.run(registration.authenticate, frame.api_key)
            if frame.public_key is not None and frame.public_key != worker.public_key:
                # a new process (its key pair is made at start): the vault seals to this key from now on
                rotate = RotateKeyRequest(
                    worker_key=frame.api_key, public_key=frame.public_key, device_info=frame.device_info
                )
                worker = await self.rt.db.run(registration.rotate_key, rotate)
            return worker
        except Unauthorized as exc:
            log.warning("refused a remote worker from %s: %s", self.peer, exc.message)
            REFUSED_CONNECTIONS.labels(exc.code).inc()
            await self._error(exc.code, exc.message, status=exc.status, field="api_key")
            raise Closing(SocketCloseCode.UNAUTHORIZED, exc.message) from None
        except Exception:
            log.exception("checking a remote worker's key failed")
            await self._error(
                "unavailable", "the key could not be checked now; try again", 503, retryable=True
            )
            raise Closing(SocketCloseCode.TRY_AGAIN_LATER, "try again") from None

    async def _join_bus(self, worker: WorkerIdentity) -> NatsClient:
        """A bus connection that is the worker: the callout checks its key again and binds its allow-lists."""
        settings = self.rt.settings

        async def on_error(exc: Exception) -> None:
            if "authoriz" in str(exc).lower():  # cut off and refused: the worker was removed meanwhile
                self._spawn(self.close(SocketCloseCode.UNAUTHORIZED, "this worker was removed"))
            else:
                log.warning("bus connection of remote worker %s: %s", worker.worker_id, exc)

        try:
            return await connect(
                settings.nats_url,
                name=f"remote-worker-{worker.worker_id}",
                credentials=BusCredentials.worker(self.key, settings),
                error_cb=on_error,
                connect_timeout=5,
            )
        except Exception as exc:
            log.warning("remote worker %s could not join the bus: %s", worker.worker_id, exc)
            await self._error(
                "bus_unavailable", "the platform's bus cannot be reached now", 503, retryable=True
            )
            raise Closing(SocketCloseCode.TRY_AGAIN_LATER, "the bus cannot be reached now") from None

    # --- frames from the worker ------------------------------------------------------------------------
    async def _read_loop(self, tasks: WorkerTasks) -> None:
        async for raw in self.ws:
            try:
                if isinstance(raw, bytes):
                    await self._on_chunk(raw)
                else:
                    await self._dispatch(tasks, self._parse(raw))
            except FrameRefused as exc:
                await self._refuse(exc)

    def _parse(self, raw: str | bytes) -> Any:
        if isinstance(raw, bytes):
            raise FrameRefused("malformed_frame", "a binary frame outside an artifact upload")
        if len(raw) > MAX_FRAME_BYTES // 4 and len(raw.encode()) > MAX_FRAME_BYTES:
            raise FrameRefused("frame_too_large", f"a frame is at most {MAX_FRAME_BYTES} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise FrameRefused("malformed_frame", f"not JSON: {exc}") from None
        try:
            return FRAMES.validate_python(data)
        except ValidationError as exc:
            refused = socket_relay.invalid_frame(exc)
            if isinstance(data, dict):
                frame_id, task_id = data.get("id"), data.get("task_id")
                refused.id = (
                    frame_id if isinstance(frame_id, int) and not isinstance(frame_id, bool) else None
                )
                refused.task_id = task_id if isinstance(task_id, str) else None
            raise refused from None

    async def _dispatch(self, tasks: WorkerTasks, frame: Any) -> None:
        if isinstance(frame, WorkerConnect):
            raise FrameRefused("out_of_order", "already connected: WORKER_CONNECT comes once per socket")
        if isinstance(frame, Ready):
            tasks.set_slots(frame.slots)
        elif isinstance(frame, HeartbeatFrame):
            self._act(frame.id, None, self._heartbeat(tasks, frame))
        elif isinstance(frame, Progress):
            await tasks.progress(frame)
        elif isinstance(frame, Started | Log | Security | Result):
            held = tasks.in_order(frame)
            self._act(frame.id, frame.task_id, self._update(tasks, held, frame))
        elif isinstance(frame, HandBack):
            held = tasks.get(frame.task_id, frame.attempt, frame.id)
            self._act(frame.id, frame.task_id, self._hand_back(tasks, held))
        elif isinstance(frame, Request):
            subject, body = socket_relay.about(frame.id, None, socket_relay.relayed_request, frame, self.key)
            self._act(frame.id, None, self._relay(subject, body))
        elif isinstance(frame, ArtifactBegin):
            self._begin_upload(tasks, frame)
            await self._send(Reply(id=frame.id))
        elif isinstance(frame, ArtifactEnd):
            upload = self.uploads.pop(frame.upload, None)
            if upload is None:
                raise FrameRefused(
                    "unknown_upload", f"no upload {frame.upload} on this socket", field="upload", id=frame.id
                )
            task_id = upload.begin.task_id
            body = socket_relay.about(frame.id, task_id, socket_relay.commit_request, upload, frame, self.key)
            self._act(frame.id, task_id, self._relay(socket_relay.COMMIT_SUBJECT, body))
        elif isinstance(frame, Drained):
            await tasks.answer_drains(frame)

    async def _update(self, tasks: WorkerTasks, held: Held, frame: Started | Log | Security | Result) -> None:
        if isinstance(frame, Started):
            # answered and nothing published: the claim already made the task running (the scheduler's
            # task.started), and the frame stays in the protocol as the order ARTIFACT_BEGIN is checked against
            return
        async with held.lock:
            try:
                update, msg_id = socket_relay.update_of(frame, self.worker_id)
                assert self.nc is not None
                await socket_relay.publish_update(self.nc, update, msg_id)
            except BaseException:
                if isinstance(frame, Result):
                    held.finishing = False  # the worker sends it again
                raise
            if isinstance(frame, Result):
                # the result is stored: a lost acknowledgement only makes JetStream offer the message again,
                # and whoever claims it then is refused (the task is finished) and terms it
                try:
                    await tasks.leases.ack(held.ack)
                except Exception as exc:
                    log.warning("acknowledging task %s failed (%s); it is finished anyway", held.task_id, exc)
                tasks.finish(held)
                self._drop_uploads(held.task_id)

    async def _hand_back(self, tasks: WorkerTasks, held: Held) -> None:
        await tasks.hand_back(held)
        self._drop_uploads(held.task_id)

    async def _heartbeat(self, tasks: WorkerTasks, frame: HeartbeatFrame) -> str | None:
        slots = max(1, tasks.slots)
        beat = Heartbeat(
            worker_key=self.key,
            busy=frame.running_tasks >= slots,
            running_tasks=frame.running_tasks,
            slots=slots,
        )
        return await self._relay(socket_relay.HEARTBEAT_SUBJECT, beat.model_dump_json().encode())

    async def _relay(self, subject: str, body: bytes) -> str | None:
        assert self.nc is not None
        try:
            return await socket_relay.request(self.nc, subject, body, self.rt.settings.rpc_timeout_seconds)
        except Unauthorized as exc:
            if exc.code == "worker_revoked":  # removed while connected: the answer says why, then it goes
                self._spawn(self.close(SocketCloseCode.UNAUTHORIZED, exc.message))
            raise

    # --- artifacts --------------------------------------------------------------------------------------
    def _begin_upload(self, tasks: WorkerTasks, frame: ArtifactBegin) -> None:
        held = tasks.get(frame.task_id, frame.attempt, frame.id)
        if not held.started or held.finishing:
            raise FrameRefused(
                "out_of_order", "ARTIFACT_BEGIN comes after STARTED and before RESULT", id=frame.id
            )
        if frame.upload in self.uploads:
            raise FrameRefused("invalid_frame", f"upload {frame.upload} is already open", id=frame.id)
        if len(self.uploads) >= MAX_UPLOADS:
            raise FrameRefused(
                "too_many_uploads", f"at most {MAX_UPLOADS} uploads are open at once", id=frame.id
            )
        self.uploads[frame.upload] = Upload(frame)

    async def _on_chunk(self, raw: bytes) -> None:
        if len(raw) > 1 + 32 + CHUNK_BYTES:
            raise FrameRefused("frame_too_large", f"an artifact chunk is at most {CHUNK_BYTES} bytes")
        try:
            upload_id, data = parse_chunk_frame(raw)
        except ValueError as exc:
            raise FrameRefused("malformed_frame", str(exc)) from None
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise FrameRefused("unknown_upload", f"no upload {upload_id} on this socket")
        assert self.nc is not None
        try:  # in line and in order: ARTIFACT_END is read only once every chunk before it is stored
            await socket_relay.store_chunk(self.nc, upload, data)
        except FrameRefused:
            self.uploads.pop(upload_id, None)
            raise
        except ServiceError as exc:  # the bus is down: the worker sends the artifact again
            self.uploads.pop(upload_id, None)
            await self._error(exc.code, exc.message, exc.status, task_id=upload.begin.task_id, retryable=True)

    def _drop_uploads(self, task_id: str) -> None:
        for upload_id in [u for u, up in self.uploads.items() if up.begin.task_id == task_id]:
            del self.uploads[upload_id]

    # --- acting on a frame and answering it --------------------------------------------------------------
    def _act(self, frame_id: int, task_id: str | None, work: Coroutine[Any, Any, str | None]) -> None:
        """Runs `work` beside the read loop (a slow service must not hold the socket's other frames) and
        answers the frame: REPLY with the service's bytes, or ERROR."""
        if len(self._inflight) >= MAX_IN_FLIGHT:
            work.close()
            raise FrameRefused(
                "too_many_in_flight",
                f"at most {MAX_IN_FLIGHT} frames are acted on at once; wait for answers",
                id=frame_id,
                task_id=task_id,
            )

        async def run() -> None:
            try:
                data = await work
            except FrameRefused as exc:
                exc.id, exc.task_id = exc.id or frame_id, exc.task_id or task_id
                await self._refuse(exc)
                return
            except ServiceError as exc:
                retryable = exc.status == 503
                await self._error(
                    exc.code,
                    exc.message,
                    exc.status,
                    id=frame_id,
                    field=exc.field,
                    task_id=task_id,
                    retryable=retryable,
                )
                return
            except Exception:
                log.exception("acting on a frame of remote worker %s failed", self.worker_id)
                await self._error("internal_error", "internal error", 500, id=frame_id, retryable=True)
                return
            await self._send_quietly(Reply(id=frame_id, data=data))

        self._spawn(run())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send(self, frame: BaseModel) -> None:
        data = frame.model_dump_json()
        async with self._send_lock:
            await self.ws.send(data)

    async def _send_quietly(self, frame: BaseModel) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._send(frame)

    async def _error(self, code: str, message: str, status: int = 400, **about: Unpack[_About]) -> None:
        await self._send_quietly(ErrorFrame(code=code, message=message, status=status, **about))

    async def _refuse(self, exc: FrameRefused) -> None:
        """A bad frame: said and counted; a socket that keeps sending them is closed (its tasks stay)."""
        REFUSED_FRAMES.labels(exc.code).inc()
        await self._error(exc.code, exc.message, id=exc.id, field=exc.field, task_id=exc.task_id)
        now = time.monotonic()
        self._budget = min(ABUSE_BUDGET, self._budget + (now - self._budget_at) * ABUSE_REFILL_PER_SECOND)
        self._budget_at = now
        self._budget -= 1
        if self._budget < 0:
            log.warning("closing the socket of remote worker %s: too many bad frames", self.worker_id)
            self._spawn(self.close(SocketCloseCode.ABUSE, "too many bad frames"))

    # --- the end ----------------------------------------------------------------------------------------
    async def _cleanup(self, puller: asyncio.Task[None] | None) -> None:
        if self.tasks is not None:
            await self.tasks.close()
        running = [t for t in (puller, *self._inflight) if t is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if self.worker is not None and self.registry.get(self.worker_id) is self:
            del self.registry[self.worker_id]
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        if self.tasks is not None:
            log.info(
                "remote worker %s disconnected; %d task(s) it held keep their lease until it lapses",
                self.worker_id,
                len(self.tasks.held),
            )
