import { useState, type ReactNode } from "react";
import { Link, useParams } from "react-router";
import { api, call } from "../api/client";
import { isTerminal, type Task } from "../api/types";
import { useSignedIn } from "../auth";
import { ArtifactsPanel } from "../components/Artifacts";
import { LiveView } from "../components/LiveView";
import { LogPanel } from "../components/LogPanel";
import { ListTable } from "../components/resource";
import { ConfirmButton, Empty, ErrorNote, Json, Loading, Page, Panel, StatusBadge } from "../components/ui";
import { fmtSeconds, fmtTime } from "../lib/format";
import { useAction, useApi, useOrgEvents, usePollInterval } from "../lib/hooks";

export function TaskDetailPage() {
  const { taskId = "" } = useParams();
  const { caps } = useSignedIn();
  const poll = usePollInterval(2000, 10000);
  const [pollOn, setPollOn] = useState(true);
  const task = useApi(
    () =>
      call(api.GET("/api/v1/tasks/{task_id}", { params: { path: { task_id: taskId } } })).then((t) => {
        setPollOn(!isTerminal(t.status));
        return t;
      }),
    [taskId],
    pollOn ? poll : null,
  );
  useOrgEvents((e) => {
    if (e.type === "RESYNC") return task.reload();
    const id = "task_id" in e ? e.task_id : e.data?.task_id;
    if (id === taskId && e.type !== "TASK_LOG") task.reload();
  });

  const cancel = useAction(() =>
    call(api.POST("/api/v1/tasks/{task_id}/cancel", { params: { path: { task_id: taskId }, query: { reason: "cancelled from the dashboard" } } })),
  );
  const [live, setLive] = useState(false);

  if (task.loading && !task.data) return <Loading what="Loading the task" />;
  if (!task.data) return <ErrorNote error={task.error} />;
  const t = task.data;
  const done = isTerminal(t.status);
  const liveable = t.status === "running" || t.status === "assigned";

  return (
    <Page
      title={t.title || `Task ${t.id}`}
      actions={
        <>
          <Link to="/tasks" className="button secondary">
            All tasks
          </Link>
          {liveable && !live && (
            <button type="button" onClick={() => setLive(true)} data-testid="live-view-open">
              Live view
            </button>
          )}
          {caps.tasksWrite && !done && (
            <ConfirmButton
              testid="task-cancel"
              confirmLabel="Yes, cancel the task"
              busy={cancel.busy}
              onConfirm={() =>
                void cancel.run().then((updated) => {
                  if (updated) task.setData(() => updated);
                })
              }
            >
              Cancel task
            </ConfirmButton>
          )}
        </>
      }
    >
      <ErrorNote error={cancel.error} testid="task-cancel-error" />
      {task.error ? <ErrorNote error={task.error} /> : null}
      <Summary task={t} />
      {live && (
        <Panel title="Live view">
          <LiveView taskId={t.id} ticketRoute={caps.eventsTicket} canDrive={caps.tasksWrite} onClose={() => setLive(false)} />
        </Panel>
      )}
      <div className="grid2">
        <Panel title={t.kind === "agent" ? "Goal" : `Steps (${t.spec.steps?.length ?? 0})`}>
          <Steps task={t} />
        </Panel>
        <Panel title="Result">
          {t.error_message && (
            <div className="error" data-testid="task-error-message">
              {t.error_step !== null && t.error_step !== undefined ? `Step ${t.error_step + 1}: ` : ""}
              {t.error_message}
            </div>
          )}
          {t.result ? <Json value={t.result} testid="task-result" /> : <Empty>{done ? "No result." : "Not finished yet."}</Empty>}
        </Panel>
      </div>
      <Panel title="Attempts">
        <Attempts taskId={t.id} version={`${t.status}/${t.attempt}`} />
      </Panel>
      <Panel title="Logs">
        <LogPanel taskId={t.id} />
      </Panel>
      <Panel title="Artifacts">
        <ArtifactsPanel taskId={t.id} version={`${t.status}/${t.attempt}/${t.artifacts?.length ?? 0}`} />
      </Panel>
    </Page>
  );
}

function Summary({ task: t }: { task: Task }) {
  const rows: [string, ReactNode][] = [
    ["Status", <StatusBadge key="s" status={t.status} testid="task-detail-status" />],
    ["ID", <span key="i" className="mono" data-testid="task-id">{t.id}</span>],
    ["Kind", t.kind],
    ["Priority", t.priority],
    ["Attempt", `${t.attempt} of ${t.max_attempts}`],
    ["Worker", t.worker_id ? <span className="mono">{t.worker_id}</span> : "—"],
    ["Created", fmtTime(t.created_at)],
    ["Started", fmtTime(t.started_at)],
    ["Finished", fmtTime(t.completed_at)],
    ["Run time", fmtSeconds(t.execution_time_seconds)],
    ["Timeout", `${t.timeout_seconds} s`],
  ];
  if (t.status_detail) rows.push(["Detail", t.status_detail]);
  if (t.worker_tags.length) rows.push(["Worker tags", t.worker_tags.join(", ")]);
  if (t.metadata && Object.keys(t.metadata).length) rows.push(["Metadata", Object.entries(t.metadata).map(([k, v]) => `${k}=${v}`).join(", ")]);
  return (
    <div className="panel">
      <dl className="facts">
        {rows.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd>{v}</dd>
          </div>
        ))}
      </dl>
    </div>
  );
}

function describe(step: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const k of ["url", "selector", "name", "text", "value", "key", "expression", "mode"]) {
    const v = step[k];
    if (typeof v === "string" && v) parts.push(k === "selector" || k === "url" ? v : `${k}=${JSON.stringify(v).slice(0, 80)}`);
  }
  for (const k of ["then", "otherwise", "steps"]) {
    const v = step[k];
    if (Array.isArray(v)) parts.push(`${k}: ${v.length} step${v.length === 1 ? "" : "s"}`);
  }
  if (step.optional) parts.push("optional");
  return parts.join(" · ");
}

function Steps({ task: t }: { task: Task }) {
  if (t.kind === "agent") {
    return (
      <div>
        <p data-testid="task-goal">{t.spec.goal}</p>
        {t.spec.agent && <Json value={t.spec.agent} />}
      </div>
    );
  }
  const steps = (t.spec.steps ?? []) as unknown as Record<string, unknown>[];
  if (!steps.length) return <Empty>No steps.</Empty>;
  return (
    <ol className="steps" data-testid="task-steps">
      {steps.map((s, i) => (
        <li key={i} className={t.error_step === i ? "step failed" : "step"}>
          <strong>{String(s.action)}</strong> <span className="muted">{describe(s)}</span>
        </li>
      ))}
    </ol>
  );
}

function Attempts({ taskId, version }: { taskId: string; version: string }) {
  const attempts = useApi(() => call(api.GET("/admin/tasks/{task_id}/attempts", { params: { path: { task_id: taskId } } })), [taskId, version]);
  return (
    <ListTable list={attempts} empty="Not started yet." testid="task-attempts" head={["#", "Status", "Worker", "Started", "Finished", "Error"]}>
      {(a) => (
        <tr key={a.attempt}>
          <td>{a.attempt}</td>
          <td>
            <StatusBadge status={a.status} />
          </td>
          <td className="mono small">{a.worker_id ?? "—"}</td>
          <td>{fmtTime(a.started_at)}</td>
          <td>{fmtTime(a.finished_at)}</td>
          <td>{a.error ?? ""}</td>
        </tr>
      )}
    </ListTable>
  );
}
