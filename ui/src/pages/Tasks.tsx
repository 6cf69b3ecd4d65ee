import { useRef, useState, type FormEvent } from "react";
import { Link, useSearchParams } from "react-router";
import { api, call } from "../api/client";
import { PRIORITIES, TASK_STATUSES, type Priority, type TaskStatus } from "../api/types";
import { useSignedIn } from "../auth";
import { Choice, ListTable } from "../components/resource";
import { Page, StatusBadge } from "../components/ui";
import { fmtAgo, fmtSeconds, fmtTime, localInputToIso, shortId } from "../lib/format";
import { useApi, useOrgEvents, usePollInterval } from "../lib/hooks";

const PAGE = 50;
const FILTERS = ["status", "priority", "worker", "tag", "after", "before"] as const;

export function TasksPage() {
  const { caps } = useSignedIn();
  const [params, setParams] = useSearchParams();
  const [pages, setPages] = useState(1);
  const poll = usePollInterval(3000, 15000);

  const status = params.get("status");
  const priority = params.get("priority");
  const query = {
    status: TASK_STATUSES.includes(status as TaskStatus) ? (status as TaskStatus) : undefined,
    priority: PRIORITIES.includes(priority as Priority) ? (priority as Priority) : undefined,
    worker: params.get("worker") || undefined,
    tag: params.get("tag") || undefined,
    created_after: params.get("after") || undefined,
    created_before: params.get("before") || undefined,
    // the first N pages are refreshed together, so a poll never drops rows the person loaded
    limit: Math.min(500, PAGE * pages),
  };
  const tasks = useApi(() => call(api.GET("/admin/tasks", { params: { query } })), [params.toString(), pages], poll);

  const pending = useRef<ReturnType<typeof setTimeout> | null>(null);
  useOrgEvents((e) => {
    if (e.type === "RESYNC") return tasks.reload();
    if (e.type !== "TASK_STATUS_CHANGE") return;
    const known = tasks.data?.items.some((t) => t.id === e.task_id);
    if (known && !query.status) {
      tasks.setData((old) =>
        old && {
          ...old,
          items: old.items.map((t) =>
            t.id === e.task_id
              ? { ...t, status: e.status as TaskStatus, attempt: e.attempt ?? t.attempt, worker_id: e.worker_id ?? t.worker_id }
              : t,
          ),
        },
      );
      return;
    }
    // a new task, or one that leaves or enters the filtered set: refetch, once per burst of events
    if (pending.current) return;
    pending.current = setTimeout(() => {
      pending.current = null;
      tasks.reload();
    }, 300);
  });

  return (
    <Page
      title="Tasks"
      actions={
        caps.tasksWrite && (
          <Link className="button" to="/tasks/new" data-testid="task-new">
            New task
          </Link>
        )
      }
    >
      <Filters
        key={params.toString()}
        params={params}
        onApply={(next) => {
          setPages(1);
          setParams(next);
        }}
      />
      <ListTable
        list={{ ...tasks, data: tasks.data?.items }}
        empty={
          <>
            No tasks{params.toString() ? " match these filters" : " yet"}.
            {caps.tasksWrite && !params.toString() && (
              <>
                {" "}
                <Link to="/tasks/new">Submit the first one</Link>.
              </>
            )}
          </>
        }
        testid="task-table"
        head={["Task", "Status", "Kind", "Priority", "Attempt", "Worker", "Created", "Duration"]}
      >
        {(t) => (
          <tr key={t.id} data-testid="task-row" data-task-id={t.id} data-status={t.status}>
            <td>
              <Link to={`/tasks/${t.id}`} data-testid="task-link">
                {t.title || <span className="mono">{shortId(t.id)}</span>}
              </Link>
            </td>
            <td>
              <StatusBadge status={t.status} testid="task-status" />
            </td>
            <td>{t.kind}</td>
            <td>{t.priority}</td>
            <td>
              {t.attempt}/{t.max_attempts}
            </td>
            <td className="mono small">{t.worker_id ? shortId(t.worker_id) : "—"}</td>
            <td title={fmtTime(t.created_at)}>{fmtAgo(t.created_at)}</td>
            <td>{fmtSeconds(t.execution_time_seconds)}</td>
          </tr>
        )}
      </ListTable>
      {tasks.data?.next_cursor && pages * PAGE < 500 && (
        <button type="button" className="secondary" onClick={() => setPages((p) => p + 1)} data-testid="task-more">
          Load more
        </button>
      )}
    </Page>
  );
}

function Filters({ params, onApply }: { params: URLSearchParams; onApply: (p: URLSearchParams) => void }) {
  const [values, setValues] = useState(() => Object.fromEntries(FILTERS.map((f) => [f, params.get(f) ?? ""])) as Record<(typeof FILTERS)[number], string>);
  const toLocal = (iso: string) => {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  };
  const apply = (v: typeof values) => {
    const next = new URLSearchParams();
    for (const f of FILTERS) if (v[f]) next.set(f, v[f]);
    onApply(next);
  };
  const set = (f: (typeof FILTERS)[number], value: string, now = false) => {
    const v = { ...values, [f]: value };
    setValues(v);
    if (now) apply(v);
  };
  const submit = (e: FormEvent) => {
    e.preventDefault();
    apply(values);
  };
  return (
    <form className="filters row" onSubmit={submit} data-testid="task-filters">
      <Choice<string> value={values.status} options={[["", "any status"], ...TASK_STATUSES]} onChange={(v) => set("status", v, true)} data-testid="filter-status" aria-label="Status" />
      <Choice<string> value={values.priority} options={[["", "any priority"], ...PRIORITIES]} onChange={(v) => set("priority", v, true)} data-testid="filter-priority" aria-label="Priority" />
      <input placeholder="worker id" value={values.worker} onChange={(e) => set("worker", e.target.value)} aria-label="Worker id" />
      <input placeholder="worker tag" value={values.tag} onChange={(e) => set("tag", e.target.value)} aria-label="Worker tag" />
      <label className="inline">
        after{" "}
        <input type="datetime-local" value={toLocal(values.after)} onChange={(e) => set("after", localInputToIso(e.target.value) ?? "")} />
      </label>
      <label className="inline">
        before{" "}
        <input type="datetime-local" value={toLocal(values.before)} onChange={(e) => set("before", localInputToIso(e.target.value) ?? "")} />
      </label>
      <button type="submit" className="secondary">
        Apply
      </button>
      {params.toString() && (
        <button type="button" className="link" onClick={() => onApply(new URLSearchParams())}>
          Clear
        </button>
      )}
    </form>
  );
}
