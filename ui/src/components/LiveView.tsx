/** Live view of a running task (`/api/v1/tasks/{id}/live`, docs/liveview.md): JPEG frames from Chromium's
 * screencast, shown while the panel is open; nothing is stored. Who may change the task may also take it over
 * (mouse and keyboard on the image go to the task's page) and press continue when a handoff step waits. */
import { useEffect, useRef, useState } from "react";
import { closeReason, openSocket } from "../api/socket";
import { CONTINUE, keyInput, mouseInput, wheelInput, type InputMessage } from "./takeover";

type State =
  | { kind: "connecting" }
  | { kind: "waiting" }
  | { kind: "streaming" }
  | { kind: "ended"; reason: string }
  | { kind: "failed"; reason: string };

interface Message {
  type?: string;
  data?: string;
  format?: string;
  width?: number;
  height?: number;
  reason?: string;
  code?: string;
  message?: string;
  handoff?: string | null;
  waiting?: boolean;
}

// a moving mouse sends many events: one a frame is plenty, and within the gateway's input allowance (60/s)
const MOVE_EVERY_MS = 50;
// how long "Continuing…" waits for the worker's word (HANDOFF waiting: false) before the button comes back
const CONFIRM_WAIT_MS = 10_000;

export function LiveView({ taskId, ticketRoute, canDrive, onClose }: { taskId: string; ticketRoute: string | null; canDrive: boolean; onClose: () => void }) {
  const [state, setState] = useState<State>({ kind: "connecting" });
  const [handoff, setHandoff] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [driving, setDriving] = useState(false);
  // continue was sent for the handoff shown: until the worker says the wait is over (HANDOFF waiting: false)
  const [continuing, setContinuing] = useState(false);
  const [page, setPage] = useState<{ width: number; height: number } | null>(null);
  const img = useRef<HTMLImageElement>(null);
  const screen = useRef<HTMLDivElement>(null);
  const socket = useRef<WebSocket | null>(null);
  const frames = useRef(0);
  const lastMove = useRef(0);

  useEffect(() => {
    let closedByUs = false;
    let opened = false;
    let ended = false;
    const onMessage = (msg: Message) => {
      if (msg.width && msg.height) setPage({ width: msg.width, height: msg.height });
      if (msg.type === "LIVE_STARTED") {
        setState({ kind: "streaming" });
        setHandoff(msg.handoff ?? null);
      } else if (msg.type === "FRAME" && msg.data) {
        frames.current += 1;
        if (img.current) img.current.src = `data:image/${msg.format || "jpeg"};base64,${msg.data}`;
        setState((s) => (s.kind === "streaming" ? s : { kind: "streaming" }));
      } else if (msg.type === "HANDOFF") {
        setHandoff(msg.waiting ? msg.message || "The task waits for you to continue." : null);
        setContinuing(false);
      } else if (msg.type === "LIVE_ENDED") {
        ended = true;
        setHandoff(null);
        setContinuing(false);
        setState({ kind: "ended", reason: msg.reason || "the task finished" });
      } else if (msg.type === "ERROR") {
        // the socket stays open after an ERROR (a refused or malformed input): said, and watching goes on
        if (msg.code === "forbidden") setDriving(false);
        setNote(msg.message || msg.code || "error");
      }
    };
    openSocket(`/api/v1/tasks/${encodeURIComponent(taskId)}/live`, ticketRoute)
      .then(({ ws }) => {
        socket.current = ws;
        if (closedByUs) {
          ws.close(1000);
          return;
        }
        ws.onopen = () => {
          opened = true;
          setState({ kind: "waiting" });
        };
        ws.onmessage = (m) => {
          if (typeof m.data !== "string") return;
          try {
            onMessage(JSON.parse(m.data) as Message);
          } catch {
            // not JSON: not ours to show
          }
        };
        ws.onclose = (c) => {
          socket.current = null;
          setDriving(false);
          // nothing can be continued through a closed socket: no button that would send into nothing
          setHandoff(null);
          setContinuing(false);
          if (closedByUs || ended) return;
          if (!opened) setState({ kind: "failed", reason: "Live view is not available on this gateway yet." });
          else if (c.code === 1000) setState({ kind: "ended", reason: "the stream ended" });
          else setState({ kind: "failed", reason: closeReason(c.code, c.reason) });
        };
      })
      .catch(() => setState({ kind: "failed", reason: "Live view could not be opened." }));
    return () => {
      closedByUs = true;
      socket.current?.close(1000);
    };
  }, [taskId, ticketRoute]);

  useEffect(() => {
    if (!continuing) return;
    // no word from the worker yet: the button comes back, for a person to press again if it still waits
    const id = setTimeout(() => {
      setContinuing(false);
      setNote("The task has not confirmed the continue yet: press it again if the task still waits.");
    }, CONFIRM_WAIT_MS);
    return () => clearTimeout(id);
  }, [continuing]);

  const send = (msg: InputMessage): boolean => {
    if (socket.current?.readyState !== WebSocket.OPEN) return false;
    socket.current.send(JSON.stringify(msg));
    return true;
  };
  const continueTask = () => {
    if (send(CONTINUE)) setContinuing(true);
    else setNote("Not connected to the task: continue was not sent.");
  };
  const live = state.kind === "streaming";
  const drive = driving && live && canDrive;
  const area = page ?? { width: img.current?.naturalWidth || 1, height: img.current?.naturalHeight || 1 };

  const text =
    state.kind === "ended" ? `Ended: ${state.reason}` : state.kind === "failed" ? state.reason : { connecting: "Connecting…", waiting: "Waiting for the first frame…", streaming: "Live" }[state.kind];
  return (
    <div className="live" data-testid="live-view">
      <div className="row spread">
        <span className={`badge live-${state.kind}`} data-testid="live-view-status" data-state={state.kind}>
          {text}
        </span>
        <div className="row">
          {canDrive && live && (
            <button
              type="button"
              className={driving ? "" : "secondary"}
              aria-pressed={driving}
              onClick={() => {
                setDriving((d) => !d);
              }}
              data-testid="live-view-takeover"
            >
              {driving ? "Stop controlling" : "Take control"}
            </button>
          )}
          <button type="button" className="secondary" onClick={onClose} data-testid="live-view-close">
            Close live view
          </button>
        </div>
      </div>
      {handoff && (
        <div className="notice row spread" role="status" data-testid="live-view-handoff">
          <span>Waiting for a person: {handoff}</span>
          {canDrive && (
            <button type="button" onClick={continueTask} disabled={continuing} data-testid="live-view-continue">
              {continuing ? "Continuing…" : "Continue the task"}
            </button>
          )}
        </div>
      )}
      {note && (
        <p className="hint" role="status" data-testid="live-view-note">
          {note}
        </p>
      )}
      {drive && <p className="hint">Your mouse and keyboard on the picture go to the task's browser. Press “Stop controlling” to give it back.</p>}
      <div
        ref={screen}
        tabIndex={drive ? 0 : undefined}
        className={drive ? "live-screen driving" : "live-screen"}
        onKeyDown={(e) => {
          if (!drive) return;
          e.preventDefault();
          send(keyInput(e, "keyDown"));
        }}
        onKeyUp={(e) => {
          if (!drive) return;
          e.preventDefault();
          send(keyInput(e, "keyUp"));
        }}
      >
        <img
          ref={img}
          alt="Live view of the task's browser"
          data-testid="live-view-frame"
          data-page-width={page?.width}
          data-page-height={page?.height}
          className="live-frame"
          draggable={false}
          hidden={state.kind !== "streaming" && frames.current === 0}
          onMouseDown={(e) => {
            if (!drive) return;
            e.preventDefault();
            send(mouseInput(e, "mousePressed", area)); // before focusing, which may scroll the picture
            screen.current?.focus({ preventScroll: true });
          }}
          onMouseUp={(e) => {
            if (drive) send(mouseInput(e, "mouseReleased", area));
          }}
          onMouseMove={(e) => {
            if (!drive || e.timeStamp - lastMove.current < MOVE_EVERY_MS) return;
            lastMove.current = e.timeStamp;
            send(mouseInput(e, "mouseMoved", area));
          }}
          onWheel={(e) => {
            if (drive) send(wheelInput(e, area));
          }}
          onContextMenu={(e) => drive && e.preventDefault()}
        />
      </div>
    </div>
  );
}
