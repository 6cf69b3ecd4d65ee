import { useState, type FormEvent } from "react";
import { api, call, downloadFile } from "../api/client";
import type { AuditEntry } from "../api/types";
import { ListTable } from "../components/resource";
import { ErrorNote, Page } from "../components/ui";
import { fmtTime, localInputToIso } from "../lib/format";
import { useAction, useApi } from "../lib/hooks";

interface Filters {
  action?: string;
  since?: string;
  until?: string;
}

export function AuditPage() {
  const [filters, setFilters] = useState<Filters>({});
  const [draft, setDraft] = useState({ action: "", since: "", until: "" });
  const [older, setOlder] = useState<AuditEntry[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const first = useApi(async () => {
    const page = await call(api.GET("/admin/audit-log", { params: { query: { ...filters, limit: 100 } } }));
    setOlder([]);
    setCursor(page.next_cursor ?? null);
    return page.items;
  }, [filters]);
  const more = useAction(async () => {
    if (!cursor) return;
    const page = await call(api.GET("/admin/audit-log", { params: { query: { ...filters, limit: 100, cursor } } }));
    setOlder((o) => [...o, ...page.items]);
    setCursor(page.next_cursor ?? null);
  });
  const exportAll = useAction(() => {
    const q = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][]);
    return downloadFile(`/admin/audit-log/export${q.toString() ? `?${q}` : ""}`, "audit-log.jsonl");
  });
  const apply = (e: FormEvent) => {
    e.preventDefault();
    setFilters({ action: draft.action || undefined, since: localInputToIso(draft.since), until: localInputToIso(draft.until) });
  };
  const rows = [...(first.data ?? []), ...older];
  return (
    <Page
      title="Audit log"
      actions={
        <button type="button" className="secondary" disabled={exportAll.busy} onClick={() => void exportAll.run()} data-testid="audit-export">
          Export (JSON lines)
        </button>
      }
    >
      <form className="filters row" onSubmit={apply}>
        <input placeholder="action, e.g. user.created" value={draft.action} onChange={(e) => setDraft({ ...draft, action: e.target.value })} aria-label="Action" data-testid="audit-action" />
        <label className="inline">
          since <input type="datetime-local" value={draft.since} onChange={(e) => setDraft({ ...draft, since: e.target.value })} />
        </label>
        <label className="inline">
          until <input type="datetime-local" value={draft.until} onChange={(e) => setDraft({ ...draft, until: e.target.value })} />
        </label>
        <button type="submit" className="secondary">
          Apply
        </button>
      </form>
      <ListTable
        list={{ ...first, data: first.data && rows }}
        errors={[exportAll.error]}
        empty="No entries."
        testid="audit-table"
        head={["When", "Action", "Outcome", "By", "Target", "From", "Detail"]}
      >
        {(a) => (
          <tr key={a.id} data-testid="audit-row" data-action={a.action}>
            <td>{fmtTime(a.at)}</td>
            <td className="mono">{a.action}</td>
            <td>{a.outcome}</td>
            <td className="mono small">{a.actor_user_id ?? (a.actor_api_key_id ? `key ${a.actor_api_key_id}` : "—")}</td>
            <td className="mono small">{a.target ?? ""}</td>
            <td className="small">{a.client_ip ?? ""}</td>
            <td className="mono small">{Object.keys(a.detail).length ? JSON.stringify(a.detail) : ""}</td>
          </tr>
        )}
      </ListTable>
      <ErrorNote error={more.error} />
      {cursor && rows.length > 0 && (
        <button type="button" className="secondary" disabled={more.busy} onClick={() => void more.run()} data-testid="audit-more">
          Older entries
        </button>
      )}
    </Page>
  );
}
