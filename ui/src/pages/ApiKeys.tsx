import { useState } from "react";
import { api, call } from "../api/client";
import type { ApiKeyScope } from "../api/types";
import { Checks, FormPanel, ListPage, useCreate } from "../components/resource";
import { ConfirmButton, Field } from "../components/ui";
import { fmtAgo, fmtTime, localInputToIso } from "../lib/format";
import { useChange, useResource } from "../lib/hooks";

const SCOPES: [ApiKeyScope, string][] = [
  ["tasks:read", "read tasks, logs and artifacts"],
  ["tasks:write", "submit and cancel tasks"],
  ["credentials:write", "store credentials, use profiles"],
  ["webhooks:admin", "manage webhook endpoints"],
  ["workers:admin", "invite and manage workers"],
];

export function ApiKeysPage() {
  const keys = useResource(() => call(api.GET("/admin/api-keys")));
  const revoke = useChange(keys, (id: string) => call(api.DELETE("/admin/api-keys/{key_id}", { params: { path: { key_id: id } } })));
  return (
    <ListPage
      title="API keys"
      create={{ label: "Create a key", testid: "api-key-new", form: (done) => <KeyForm onDone={done} />, then: keys.reload }}
      list={keys}
      errors={[revoke.error]}
      empty="No API keys. Programs use a key instead of a password."
      testid="api-key-table"
      head={["Name", "Key", "Scopes", "Created", "Last used", "Expires", "State", ""]}
    >
      {(k) => (
        <tr key={k.id} data-testid="api-key-row" data-name={k.name} className={k.revoked_at ? "inactive" : ""}>
          <td>{k.name}</td>
          <td className="mono">{k.prefix}…</td>
          <td className="small">{k.scopes.join(", ")}</td>
          <td>{fmtTime(k.created_at)}</td>
          <td>{fmtAgo(k.last_used_at)}</td>
          <td>{k.expires_at ? fmtTime(k.expires_at) : "never"}</td>
          <td>{k.revoked_at ? `revoked ${fmtAgo(k.revoked_at)}` : "active"}</td>
          <td>
            {!k.revoked_at && (
              <ConfirmButton testid="api-key-revoke" confirmLabel="Revoke now" busy={revoke.busy} onConfirm={() => void revoke.run(k.id)}>
                Revoke
              </ConfirmButton>
            )}
          </td>
        </tr>
      )}
    </ListPage>
  );
}

function KeyForm({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<ApiKeyScope[]>(["tasks:read", "tasks:write"]);
  const [expires, setExpires] = useState("");
  const save = useCreate(async () => {
    const created = await call(api.POST("/admin/api-keys", { body: { name, scopes, expires_at: localInputToIso(expires) ?? null } }));
    return { title: "API key created", label: `Key "${name}"`, value: created.key, testid: "api-key-value" };
  }, onDone);
  return (
    <FormPanel title="Create an API key" testid="api-key-form" action={save} fields={["name", "scopes", "expires_at"]} submit={{ label: "Create key", testid: "api-key-save" }} onCancel={onDone}>
      <div className="grid3">
        <Field label="Name" name="name">
          <input required value={name} onChange={(e) => setName(e.target.value)} data-testid="api-key-name" />
        </Field>
        <Field label="Expires (optional)" name="expires_at">
          <input type="datetime-local" value={expires} onChange={(e) => setExpires(e.target.value)} />
        </Field>
      </div>
      <Field label="Scopes" name="scopes">
        <Checks options={SCOPES} chosen={scopes} onChange={setScopes} testid={(s) => `api-key-scope-${s}`} />
      </Field>
    </FormPanel>
  );
}
