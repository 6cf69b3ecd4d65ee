/** A task's log lines, followed live over SSE (`/admin/tasks/{id}/logs?follow=true`) until the task ends; when
 * the stream cannot be read (a proxy that buffers it, say), the same lines are paged every 2 s instead. */
import { useEffect, useRef, useState } from "react";
import { api, call } from "../api/client";
import { ApiError } from "../api/errors";
import { readSse } from "../api/sse";
import type { TaskLog, TaskLogPage } from "../api/types";
import { ErrorNote } from "./ui";

const MAX_LINES = 5000;

export function LogPanel({ taskId }: { taskId: string }) {
  const [lines, setLines] = useState<TaskLog[]>([]);
  const [state, setState] = useState<"following" | "polling" | "finished">("following");
  const [error, setError] = useState<unknown>(null);
  const box = useRef<HTMLPreElement>(null);
  const stick = useRef(true);

  useEffect(() => {
    const abort = new AbortController();
    let lastId = 0;
    const add = (batch: TaskLog[]) => {
      const fresh = batch.filter((l) => l.id > lastId);
      if (!fresh.length) return;
      lastId = fresh[fresh.length - 1]!.id;
      setLines((old) => [...old, ...fresh].slice(-MAX_LINES));
    };
    const follow = async () => {
      for (let tries = 0; tries < 3 && !abort.signal.aborted; tries++) {
        let ended = false;
        try {
          await readSse(
            `/admin/tasks/${encodeURIComponent(taskId)}/logs?follow=true&since=${lastId}`,
            (m) => {
              if (m.event === "log") add([JSON.parse(m.data) as TaskLog]);
              else if (m.event === "end") ended = (JSON.parse(m.data) as { finished?: boolean }).finished !== false;
            },
            { signal: abort.signal, lastEventId: lastId ? String(lastId) : null },
          );
          if (ended) {
            setState("finished");
            return;
          }
          tries = -1; // the stream ran and closed without `end` (an hour passed): follow again
        } catch (e) {
          if (abort.signal.aborted) return;
          if (e instanceof ApiError && e.status !== 0 && e.status < 500) {
            setError(e);
            return;
          }
        }
        await new Promise((r) => setTimeout(r, 1000 * (tries + 1)));
      }
      if (abort.signal.aborted) return;
      setState("polling");
      while (!abort.signal.aborted) {
        try {
          // the route also answers SSE, so its generated type is `unknown`: this is the JSON page
          const page = (await call(
            api.GET("/admin/tasks/{task_id}/logs", { params: { path: { task_id: taskId }, query: { since: lastId, limit: 1000 } } }),
          )) as TaskLogPage;
          add(page.items);
          setError(null);
          if (page.finished && page.items.length === 0) {
            setState("finished");
            return;
          }
          if (page.items.length) continue;
        } catch (e) {
          setError(e);
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    void follow();
    return () => abort.abort();
  }, [taskId]);

  useEffect(() => {
    if (stick.current && box.current) box.current.scrollTop = box.current.scrollHeight;
  }, [lines]);

  return (
    <div>
      <div className="muted small" data-testid="task-logs-state" data-state={state}>
        {state === "following" ? "Following live…" : state === "polling" ? "Refreshing every 2 s" : `${lines.length} lines`}
      </div>
      <ErrorNote error={error} />
      <pre
        className="logs"
        ref={box}
        data-testid="task-logs"
        onScroll={(e) => {
          const el = e.currentTarget;
          stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
        }}
      >
        {lines.length === 0 && <span className="muted">No log lines yet.</span>}
        {lines.map((l) => (
          <div key={l.id} className={`log log-${l.level.toLowerCase()}`} data-testid="log-line">
            <span className="muted">{new Date(l.at).toLocaleTimeString()}</span> <span className="level">{l.level}</span>{" "}
            {l.attempt > 1 && <span className="muted">[#{l.attempt}] </span>}
            {l.message}
          </div>
        ))}
      </pre>
    </div>
  );
}
