import { useState } from "react";
import { api, call, rawJson } from "../api/client";
import { fillPath } from "../api/capabilities";
import { TASK_TRANSITIONS } from "../api/events";
import type { WebhookDelivery, WebhookEndpoint } from "../api/types";
import { useSignedIn } from "../auth";
import { Checks, FormPanel, ListTable, ResourcePage, SecretPanel } from "../components/resource";
import { ConfirmButton, Field, Panel } from "../components/ui";
import { fmtTime, splitList } from "../lib/format";
import { useAction, useApi, useChange, useResource } from "../lib/hooks";

/** The event types the platform emits today (browserfleet_contracts.events.EventType); a newer gateway's
 * catalog (`GET /api/v1/webhooks/event-types`) replaces this list when the API has it. */
const KNOWN_EVENTS = [...TASK_TRANSITIONS, "security.request_blocked", "organization.deleted"];

export function WebhooksPage() {
  const endpoints = useResource(() => call(api.GET("/admin/webhooks")));
  const remove = useChange(endpoints, (id: string) => call(api.DELETE("/admin/webhooks/{endpoint_id}", { params: { path: { endpoint_id: id } } })));
  return (
    <ResourcePage title="Webhooks" create={{ label: "Add endpoint", testid: "webhook-new", form: (done) => <EndpointForm onDone={done} />, then: endpoints.reload }}>
      <Panel title="Endpoints">
        <ListTable
          list={endpoints}
          errors={[remove.error]}
          empty="No endpoints. Each receives the events it subscribes to, signed with its own secret."
          testid="webhook-table"
          head={["URL", "Events", "Description", "Enabled", "Created", ""]}
        >
          {(w) => (
            <tr key={w.id} data-testid="webhook-row" data-endpoint-id={w.id}>
              <td className="mono small">{w.url}</td>
              <td>{w.events.join(", ")}</td>
              <td>{w.description ?? ""}</td>
              <td>{w.enabled ? "yes" : "no"}</td>
              <td>{fmtTime(w.created_at)}</td>
              <td>
                <ConfirmButton testid="webhook-delete" confirmLabel="Remove" busy={remove.busy} onConfirm={() => void remove.run(w.id)}>
                  Remove
                </ConfirmButton>
              </td>
            </tr>
          )}
        </ListTable>
      </Panel>
      <Deliveries endpoints={endpoints.data ?? []} />
    </ResourcePage>
  );
}

function EndpointForm({ onDone }: { onDone: () => void }) {
  const { caps } = useSignedIn();
  const catalog = useApi(async () => {
    if (!caps.webhookEventTypes) return KNOWN_EVENTS;
    const reply = await rawJson<unknown>(caps.webhookEventTypes);
    const items = Array.isArray(reply) ? reply : ((reply as { items?: unknown[] } | null)?.items ?? []);
    const names = items.map((x) => (typeof x === "string" ? x : String((x as { type?: string; name?: string }).type ?? (x as { name?: string }).name ?? ""))).filter(Boolean);
    return names.length ? names : KNOWN_EVENTS;
  }, []);
  const [url, setUrl] = useState("");
  const [description, setDescription] = useState("");
  const [events, setEvents] = useState<string[]>(["task.completed", "task.failed"]);
  const [other, setOther] = useState("");
  const [created, setCreated] = useState<WebhookEndpoint | null>(null);
  const save = useAction(async () => {
    const all = [...new Set([...events, ...splitList(other)])];
    setCreated(await call(api.POST("/admin/webhooks", { body: { url, events: all, description: description || null } })));
  });
  if (created?.secret) return <SecretPanel title="Endpoint added" label={`Signing secret for ${created.url}`} value={created.secret} testid="webhook-secret" onDone={onDone} />;
  if (created)
    return (
      <Panel title="Endpoint added">
        <button type="button" onClick={onDone}>
          Done
        </button>
      </Panel>
    );
  return (
    <FormPanel title="Add a webhook endpoint" testid="webhook-form" action={save} fields={["url", "events", "description"]} submit={{ label: "Add endpoint", testid: "webhook-save" }} onCancel={onDone}>
      <Field label="URL" name="url" hint="https://… ; internal addresses are refused">
        <input required type="url" value={url} onChange={(e) => setUrl(e.target.value)} data-testid="webhook-url" />
      </Field>
      <Field label="Events" name="events">
        <Checks options={(catalog.data ?? KNOWN_EVENTS).map((name) => [name] as const)} chosen={events} onChange={setEvents} />
        <input placeholder="other event types, comma-separated" value={other} onChange={(e) => setOther(e.target.value)} />
      </Field>
      <Field label="Description (optional)" name="description">
        <input value={description} onChange={(e) => setDescription(e.target.value)} />
      </Field>
    </FormPanel>
  );
}

function Deliveries({ endpoints }: { endpoints: WebhookEndpoint[] }) {
  const { caps } = useSignedIn();
  const [endpointId, setEndpointId] = useState("");
  const list = useApi(
    () => call(api.GET("/admin/webhooks/deliveries", { params: { query: { endpoint_id: endpointId || undefined, limit: 100 } } })),
    [endpointId],
    15_000,
  );
  const replay = useChange(list, async (d: WebhookDelivery) => {
    if (caps.deliveryReplay) await rawJson(fillPath(caps.deliveryReplay, d.id), "POST");
  });
  const urlOf = (id: string) => endpoints.find((e) => e.id === id)?.url ?? id;
  return (
    <Panel
      title="Deliveries"
      actions={
        <select value={endpointId} onChange={(e) => setEndpointId(e.target.value)} aria-label="Endpoint" data-testid="delivery-filter">
          <option value="">all endpoints</option>
          {endpoints.map((e) => (
            <option key={e.id} value={e.id}>
              {e.url}
            </option>
          ))}
        </select>
      }
    >
      <ListTable
        list={list}
        errors={[replay.error]}
        empty="No deliveries yet."
        testid="delivery-table"
        head={["When", "Event", "Endpoint", "Status", "HTTP", "Attempt", "Latency", "Next try", "Error", !!caps.deliveryReplay && ""]}
      >
        {(d) => (
          <tr key={d.id} data-testid="delivery-row" data-status={d.status}>
            <td>{fmtTime(d.created_at)}</td>
            <td>{d.event_type}</td>
            <td className="mono small">{urlOf(d.endpoint_id)}</td>
            <td>
              <span className={`badge delivery-${d.status}`}>{d.status}</span>
            </td>
            <td>{d.status_code ?? "—"}</td>
            <td>{d.attempt}</td>
            <td>{d.latency_ms !== null && d.latency_ms !== undefined ? `${Math.round(d.latency_ms)} ms` : "—"}</td>
            <td>{d.next_attempt_at ? fmtTime(d.next_attempt_at) : "—"}</td>
            <td className="small">{d.error ?? ""}</td>
            {caps.deliveryReplay && (
              <td>
                <button type="button" className="secondary" disabled={replay.busy} onClick={() => void replay.run(d)} data-testid="delivery-replay">
                  Replay
                </button>
              </td>
            )}
          </tr>
        )}
      </ListTable>
    </Panel>
  );
}
