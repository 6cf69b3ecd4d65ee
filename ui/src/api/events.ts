/** The organization's event stream over WebSocket (`/api/v1/events/ws`, draft protocol). Screens always poll;
 * while the stream is live they poll slowly and apply its events at once. When the socket cannot be opened
 * (a gateway without it, a proxy that blocks upgrades) the stream reports `unavailable` and retries rarely. */
import { openSocket } from "./socket";
import { session } from "./session";

export type StreamState = "off" | "connecting" | "live" | "unavailable";

interface Base {
  seq?: number;
  timestamp?: string;
  event?: string;
  data?: Record<string, unknown>;
}
export interface TaskStatusChange extends Base {
  type: "TASK_STATUS_CHANGE";
  task_id: string;
  status: string;
  attempt?: number;
  worker_id?: string | null;
}
export interface TaskLogEvent extends Base {
  type: "TASK_LOG";
  task_id: string;
  attempt?: number;
  lines?: { seq: number; level: string; message: string; ts: string }[];
}
export interface WorkerStatusChange extends Base {
  type: "WORKER_STATUS_CHANGE";
  worker_id: string;
  status: string;
}
export interface OtherEvent extends Base {
  type: "EVENT";
}
/** Not from the server: events were lost (a resume past what the gateway retains), so screens reload. */
export interface Resync {
  type: "RESYNC";
}
export type OrgEvent = TaskStatusChange | TaskLogEvent | WorkerStatusChange | OtherEvent | Resync;

/** The events of a task's status changes (browserfleet_contracts.events.EventType). */
export const TASK_TRANSITIONS = ["task.created", "task.started", "task.completed", "task.failed", "task.cancelled", "task.timed_out"];

/** What the dashboard listens to: task transitions and worker presence, not `task.log` (every log line of the
 * organization); a task's page follows its own logs over SSE. */
const TYPES = [...TASK_TRANSITIONS, "worker.*"];

const PATH = "/api/v1/events/ws";
const PING_MS = 25_000;
const GIVE_UP_AFTER = 3; // consecutive failures before the dashboard says "polling" and backs off
const RARE_RETRY_MS = 60_000;

class OrgEventStream {
  private ws: WebSocket | null = null;
  private orgId: string | null = null;
  private ticketRoute: string | null = null;
  private lastSeq: number | null = null;
  private failures = 0;
  private reachedLive = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private ping: ReturnType<typeof setInterval> | null = null;
  private stateValue: StreamState = "off";
  private readonly handlers = new Set<(e: OrgEvent) => void>();
  private readonly stateListeners = new Set<() => void>();

  get state(): StreamState {
    return this.stateValue;
  }

  start(orgId: string, ticketRoute: string | null): void {
    if (this.orgId === orgId && this.stateValue !== "off") return;
    this.stop();
    this.orgId = orgId;
    this.ticketRoute = ticketRoute;
    this.lastSeq = null;
    this.failures = 0;
    void this.connect();
  }

  stop(): void {
    this.orgId = null;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    this.setState("off");
  }

  onEvent(handler: (e: OrgEvent) => void): () => void {
    this.handlers.add(handler);
    return () => this.handlers.delete(handler);
  }

  onState(listener: () => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  private setState(s: StreamState): void {
    if (s === this.stateValue) return;
    this.stateValue = s;
    for (const l of [...this.stateListeners]) l();
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.ping) clearInterval(this.ping);
    this.timer = null;
    this.ping = null;
  }

  private async connect(): Promise<void> {
    const org = this.orgId;
    if (!org || !session.hasTokens()) return;
    if (this.stateValue !== "unavailable") this.setState("connecting");
    this.reachedLive = false;
    let ws: WebSocket;
    try {
      ws = (await openSocket(PATH, this.ticketRoute)).ws;
    } catch {
      this.scheduleReconnect(0);
      return;
    }
    if (this.orgId !== org) {
      ws.close(1000);
      return;
    }
    this.ws = ws;
    ws.onmessage = (m) => this.onMessage(ws, m);
    ws.onclose = (c) => this.onClose(ws, c.code);
  }

  private send(ws: WebSocket, msg: unknown): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  private onMessage(ws: WebSocket, m: MessageEvent): void {
    if (ws !== this.ws || typeof m.data !== "string") return;
    let msg: { type?: string; seq?: number; code?: string; gap?: boolean };
    try {
      msg = JSON.parse(m.data);
    } catch {
      return;
    }
    switch (msg.type) {
      case "AUTHENTICATED":
        this.send(ws, {
          type: "SUBSCRIBE",
          channel: `org:${this.orgId}`,
          types: TYPES,
          ...(this.lastSeq !== null ? { since: this.lastSeq } : {}),
        });
        return;
      case "SUBSCRIBED":
        if (this.lastSeq === null && typeof msg.seq === "number") this.lastSeq = msg.seq;
        if (msg.gap) this.dispatch({ type: "RESYNC" });
        this.failures = 0;
        this.reachedLive = true;
        this.setState("live");
        this.clearTimers();
        this.ping = setInterval(() => this.send(ws, { type: "PING" }), PING_MS);
        return;
      case "PONG":
        return;
      case "ERROR":
        if (msg.code === "forbidden_channel") ws.close(1000);
        return;
      case "TASK_STATUS_CHANGE":
      case "TASK_LOG":
      case "WORKER_STATUS_CHANGE":
      case "EVENT": {
        if (typeof msg.seq === "number") {
          if (this.lastSeq !== null && msg.seq <= this.lastSeq) return; // already seen (resume overlap)
          this.lastSeq = msg.seq;
        }
        this.dispatch(msg as OrgEvent);
        return;
      }
      default:
        return;
    }
  }

  private dispatch(e: OrgEvent): void {
    for (const h of [...this.handlers]) h(e);
  }

  private onClose(ws: WebSocket, code: number): void {
    if (ws !== this.ws) return;
    this.ws = null;
    this.clearTimers();
    if (!this.orgId) return;
    if (!this.reachedLive) this.failures += 1;
    const backoff = Math.min(30_000, 1000 * 2 ** this.failures);
    if (code === 4401 && this.failures < GIVE_UP_AFTER) {
      // token expired while connected: rotate it, then resume from the last sequence
      void session.refresh().then((t) => {
        if (t || session.hasTokens()) this.scheduleReconnect(t ? 500 : backoff);
        else this.stop();
      });
      return;
    }
    if (code === 4403) {
      this.setState("unavailable");
      this.timer = setTimeout(() => void this.connect(), RARE_RETRY_MS);
      return;
    }
    if (this.reachedLive && (code === 4008 || code === 1001)) {
      this.scheduleReconnect(250); // dropped as slow, or the gateway is restarting: resume with `since`
      return;
    }
    this.scheduleReconnect(backoff);
  }

  private scheduleReconnect(delay: number): void {
    if (!this.orgId) return;
    if (this.failures >= GIVE_UP_AFTER) {
      this.setState("unavailable");
      delay = RARE_RETRY_MS;
    } else if (this.stateValue === "live") {
      this.setState("connecting");
    }
    this.timer = setTimeout(() => void this.connect(), delay);
  }
}

export const orgEvents = new OrgEventStream();
