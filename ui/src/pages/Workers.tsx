import { useState } from "react";
import { api, call, rawJson } from "../api/client";
import { fillPath } from "../api/capabilities";
import type { Worker } from "../api/types";
import { useSignedIn } from "../auth";
import { Choice, FormPanel, ListPage, useCreate } from "../components/resource";
import { ConfirmButton, Field } from "../components/ui";
import { fmtAgo, fmtTime, splitList } from "../lib/format";
import { useChange, useOrgEvents, usePollInterval, useResource } from "../lib/hooks";

const TTLS: [number, string][] = [
  [3600, "1 hour"],
  [86400, "1 day"],
  [604800, "7 days"],
];

export function WorkersPage() {
  const { caps } = useSignedIn();
  const poll = usePollInterval(5000, 30_000);
  const workers = useResource(() => call(api.GET("/admin/workers")), [], poll);

  useOrgEvents((e) => {
    if (e.type === "RESYNC") return workers.reload();
    if (e.type !== "WORKER_STATUS_CHANGE") return;
    const known = workers.data?.some((w) => w.id === e.worker_id);
    const state = e.status as Worker["state"];
    if (known) workers.setData((old) => old?.map((w) => (w.id === e.worker_id ? { ...w, state, last_seen: e.timestamp ?? w.last_seen } : w)));
    else workers.reload();
  });

  const act = useChange(workers, async (kind: "drain" | "revoke", w: Worker) => {
    const route = kind === "drain" ? caps.workerDrain : caps.workerRevoke;
    if (route) await rawJson(fillPath(route, w.id), kind === "drain" ? "POST" : "DELETE");
  });

  const controls = caps.workerDrain || caps.workerRevoke;
  return (
    <ListPage
      title="Workers"
      create={{ label: "Invite a worker", testid: "worker-invite", form: (done) => <InviteForm onDone={done} /> }}
      list={workers}
      errors={[act.error]}
      empty="No workers yet. Invite one: it joins with the one-time code."
      testid="worker-table"
      head={["Name", "State", "Tags", "Running", "Last seen", "Joined", !!controls && ""]}
    >
      {(w) => (
        <tr key={w.id} data-testid="worker-row" data-worker-id={w.id} data-state={w.state}>
          <td>
            {w.name} <div className="mono small muted">{w.id}</div>
          </td>
          <td>
            <span className={`badge worker-${w.state}`} data-testid="worker-state">
              {w.state}
            </span>
          </td>
          <td>{w.tags.join(", ") || <span className="muted">—</span>}</td>
          <td>{w.running_tasks}</td>
          <td title={fmtTime(w.last_seen)}>{fmtAgo(w.last_seen)}</td>
          <td>{fmtTime(w.created_at)}</td>
          {controls && (
            <td className="row">
              {caps.workerDrain && (
                <ConfirmButton testid="worker-drain" confirmLabel="Drain" danger={false} busy={act.busy} onConfirm={() => void act.run("drain", w)}>
                  Drain
                </ConfirmButton>
              )}
              {caps.workerRevoke && (
                <ConfirmButton testid="worker-revoke" confirmLabel="Revoke its key" busy={act.busy} onConfirm={() => void act.run("revoke", w)}>
                  Revoke
                </ConfirmButton>
              )}
            </td>
          )}
        </tr>
      )}
    </ListPage>
  );
}

function InviteForm({ onDone }: { onDone: () => void }) {
  const [ttl, setTtl] = useState(3600);
  const [tags, setTags] = useState("");
  const create = useCreate(async () => {
    const invite = await call(api.POST("/admin/workers/invite", { body: { ttl_seconds: ttl, tags: splitList(tags), multi_use: false, pool: "default" } }));
    return {
      title: "Invite code",
      panel: "invite-result",
      label: `Valid until ${fmtTime(invite.expires_at)}${invite.tags.length ? ` · tags: ${invite.tags.join(", ")}` : ""}`,
      value: invite.code,
      testid: "invite-code",
      note: (
        <p className="hint">
          The worker registers with it once (<code>POST /workers/register</code>) and gets its own key; it then shows up in this
          list.
        </p>
      ),
    };
  }, onDone);
  return (
    <FormPanel title="Invite a worker" testid="invite-form" action={create} fields={["ttl_seconds", "tags"]} submit={{ label: "Create invite code", testid: "invite-create" }} onCancel={onDone}>
      <div className="grid3">
        <Field label="Valid for" name="ttl_seconds">
          <Choice value={ttl} options={TTLS} onChange={setTtl} data-testid="invite-ttl" />
        </Field>
        <Field label="Tags (optional)" name="tags" hint="comma-separated, e.g. gpu, eu-west">
          <input value={tags} onChange={(e) => setTags(e.target.value)} data-testid="invite-tags" />
        </Field>
      </div>
    </FormPanel>
  );
}
