import { useState } from "react";
import { api, call } from "../api/client";
import type { Schedule, ScheduleCreate, TaskCreate } from "../api/types";
import { useSignedIn } from "../auth";
import { JsonEditor, parseJson, type ParseProblem } from "../components/JsonEditor";
import { FormPanel, ListTable } from "../components/resource";
import { ConfirmButton, Field, Page } from "../components/ui";
import { fmtAgo, fmtTime } from "../lib/format";
import { useAction, useChange, useResource } from "../lib/hooks";
import { STEPS_TEMPLATE, checkTaskShape } from "./TaskNew";

const FIELDS = ["name", "cron", "timezone", "paused", "task"] as const;

export function SchedulesPage() {
  const { caps } = useSignedIn();
  const list = useResource(() => call(api.GET("/admin/schedules")), [], 30_000);
  const [editing, setEditing] = useState<Schedule | "new" | null>(null);
  const act = useChange(list, (kind: "pause" | "resume" | "delete", s: Schedule) => {
    const path = { schedule_id: s.id };
    if (kind === "delete") return call(api.DELETE("/admin/schedules/{schedule_id}", { params: { path } }));
    if (kind === "pause") return call(api.POST("/admin/schedules/{schedule_id}/pause", { params: { path } }));
    return call(api.POST("/admin/schedules/{schedule_id}/resume", { params: { path } }));
  });

  return (
    <Page
      title="Schedules"
      actions={
        caps.schedulesWrite &&
        !editing && (
          <button type="button" onClick={() => setEditing("new")} data-testid="schedule-new">
            New schedule
          </button>
        )
      }
    >
      {editing && (
        <ScheduleForm
          key={editing === "new" ? "new" : editing.id}
          schedule={editing === "new" ? null : editing}
          onDone={() => {
            setEditing(null);
            list.reload();
          }}
        />
      )}
      <ListTable
        list={list}
        errors={[act.error]}
        empty="No schedules. A schedule creates a task from a template at every tick of its cron expression."
        testid="schedule-table"
        head={["Name", "Cron", "Task", "Next run", "Last run", "State", caps.schedulesWrite && ""]}
      >
        {(s) => (
          <tr key={s.id} data-testid="schedule-row" data-schedule-id={s.id}>
            <td>{s.name}</td>
            <td className="mono">
              {s.cron} <span className="muted small">{s.timezone}</span>
            </td>
            <td>{s.task.title || (s.task.steps ? `${s.task.steps.length} steps` : "agent task")}</td>
            <td title={fmtTime(s.next_run_at)}>{s.paused ? "—" : fmtTime(s.next_run_at)}</td>
            <td title={fmtTime(s.last_run_at)}>{fmtAgo(s.last_run_at)}</td>
            <td>
              <span className={s.paused ? "badge status-cancelled" : "badge status-running"} data-testid="schedule-state">
                {s.paused ? "paused" : "active"}
              </span>
            </td>
            {caps.schedulesWrite && (
              <td className="row">
                <button type="button" className="secondary" onClick={() => setEditing(s)}>
                  Edit
                </button>
                <button type="button" className="secondary" disabled={act.busy} onClick={() => void act.run(s.paused ? "resume" : "pause", s)} data-testid="schedule-toggle">
                  {s.paused ? "Resume" : "Pause"}
                </button>
                <ConfirmButton testid="schedule-delete" confirmLabel="Delete" busy={act.busy} onConfirm={() => void act.run("delete", s)}>
                  Delete
                </ConfirmButton>
              </td>
            )}
          </tr>
        )}
      </ListTable>
    </Page>
  );
}

function ScheduleForm({ schedule, onDone }: { schedule: Schedule | null; onDone: () => void }) {
  const [name, setName] = useState(schedule?.name ?? "");
  const [cron, setCron] = useState(schedule?.cron ?? "*/15 * * * *");
  const [timezone, setTimezone] = useState(schedule?.timezone ?? (Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"));
  const [paused, setPaused] = useState(schedule?.paused ?? false);
  const [text, setText] = useState(schedule ? JSON.stringify(schedule.task, null, 2) : STEPS_TEMPLATE);
  const [problem, setProblem] = useState<ParseProblem | null>(null);
  const save = useAction(async (body: ScheduleCreate) => {
    if (schedule) await call(api.PUT("/admin/schedules/{schedule_id}", { params: { path: { schedule_id: schedule.id } }, body }));
    else await call(api.POST("/admin/schedules", { body }));
    onDone();
  });

  const submit = () => {
    const parsed = parseJson(text);
    const shape = parsed.problem ? null : checkTaskShape(parsed.value);
    if (parsed.problem || shape) {
      setProblem(parsed.problem ?? { message: shape ?? "", line: null });
      return;
    }
    setProblem(null);
    void save.run({ name, cron, timezone, paused, task: parsed.value as TaskCreate });
  };

  return (
    <FormPanel
      title={schedule ? `Edit ${schedule.name}` : "New schedule"}
      testid="schedule-form"
      action={save}
      fields={FIELDS}
      submit={{ label: schedule ? "Save" : "Create schedule", testid: "schedule-save" }}
      onCancel={onDone}
      onSubmit={submit}
    >
      <div className="grid3">
        <Field label="Name" name="name">
          <input required value={name} onChange={(e) => setName(e.target.value)} data-testid="schedule-name" />
        </Field>
        <Field label="Cron (5 fields)" name="cron" hint="e.g. */15 * * * * = every 15 minutes">
          <input required className="mono" value={cron} onChange={(e) => setCron(e.target.value)} data-testid="schedule-cron" />
        </Field>
        <Field label="Time zone (IANA)" name="timezone">
          <input required value={timezone} onChange={(e) => setTimezone(e.target.value)} />
        </Field>
      </div>
      <label className="check">
        <input type="checkbox" checked={paused} onChange={(e) => setPaused(e.target.checked)} /> Paused
      </label>
      <JsonEditor label="Task template (JSON)" value={text} onChange={setText} error={save.error} prefix="task" problem={problem} rows={12} testid="schedule-task-json" />
    </FormPanel>
  );
}
