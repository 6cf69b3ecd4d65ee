import { useState } from "react";
import { api, call } from "../api/client";
import type { CredentialType } from "../api/types";
import { useSignedIn } from "../auth";
import { Choice, FormPanel, ListTable, ResourcePage } from "../components/resource";
import { ConfirmButton, Field, Panel } from "../components/ui";
import { fmtBytes, fmtTime } from "../lib/format";
import { useAction, useChange, useResource } from "../lib/hooks";

const TYPES: CredentialType[] = ["password", "api_key", "token", "totp", "other"];

/** Write-only: names, types and dates are listed; a value goes in and is never shown or fetched again. */
export function CredentialsPage() {
  const { caps } = useSignedIn();
  const list = useResource(() => call(api.GET("/api/v1/credentials")));
  const remove = useChange(list, (name: string) => call(api.DELETE("/api/v1/credentials/{name}", { params: { path: { name } } })));
  return (
    <ResourcePage
      title="Credentials"
      create={caps.credentialsWrite && { label: "Store a credential", testid: "credential-new", form: (done) => <CredentialForm onDone={done} />, then: list.reload }}
      intro={
        <p className="hint">
          Steps reference a credential as <code>{"{{ secrets.NAME }}"}</code>. Values are encrypted in the vault, reach only the
          worker running a task that names them, and are never shown here.
        </p>
      }
    >
      <ListTable list={list} errors={[remove.error]} empty="No credentials stored." testid="credential-table" head={["Name", "Type", "Description", "Updated", caps.credentialsWrite && ""]}>
        {(c) => (
          <tr key={c.id} data-testid="credential-row" data-name={c.name}>
            <td className="mono">{c.name}</td>
            <td>{c.type}</td>
            <td>{c.description ?? ""}</td>
            <td>{fmtTime(c.updated_at)}</td>
            {caps.credentialsWrite && (
              <td>
                <ConfirmButton testid="credential-delete" confirmLabel="Delete" busy={remove.busy} onConfirm={() => void remove.run(c.name)}>
                  Delete
                </ConfirmButton>
              </td>
            )}
          </tr>
        )}
      </ListTable>
      <Profiles />
    </ResourcePage>
  );
}

function CredentialForm({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [type, setType] = useState<CredentialType>("password");
  const [description, setDescription] = useState("");
  const [value, setValue] = useState("");
  const save = useAction(async () => {
    await call(api.POST("/api/v1/credentials", { body: { name, type, value, description: description || null } }));
    setValue("");
    onDone();
  });
  return (
    <FormPanel title="Store a credential" testid="credential-form" action={save} fields={["name", "type", "description", "value"]} submit={{ label: "Store", testid: "credential-save" }} onCancel={onDone} autoComplete="off">
      <div className="grid3">
        <Field label="Name" name="name" hint="letters, digits, _ ; storing an existing name replaces its value">
          <input required className="mono" value={name} onChange={(e) => setName(e.target.value)} data-testid="credential-name" />
        </Field>
        <Field label="Type" name="type">
          <Choice value={type} options={TYPES} onChange={setType} />
        </Field>
        <Field label="Description (optional)" name="description">
          <input value={description} onChange={(e) => setDescription(e.target.value)} />
        </Field>
      </div>
      <Field label="Value" name="value" hint="write-only: it will not be shown again">
        <input type="password" required autoComplete="new-password" value={value} onChange={(e) => setValue(e.target.value)} data-testid="credential-value" />
      </Field>
    </FormPanel>
  );
}

function Profiles() {
  const { caps } = useSignedIn();
  const list = useResource(() => call(api.GET("/api/v1/profiles")));
  const remove = useChange(list, (name: string) => call(api.DELETE("/api/v1/profiles/{name}", { params: { path: { name } } })));
  return (
    <Panel title="Browser profiles">
      <p className="hint">Signed-in browser sessions (cookies, storage) that tasks naming a profile load and save. Encrypted like credentials.</p>
      <ListTable list={list} errors={[remove.error]} empty="No profiles." testid="profile-table" head={["Name", "Version", "Size", "In use", "Updated", caps.profilesDelete && ""]}>
        {(p) => (
          <tr key={p.name} data-testid="profile-row">
            <td className="mono">{p.name}</td>
            <td>{p.version}</td>
            <td>{fmtBytes(p.size)}</td>
            <td>{p.in_use ? "yes" : "no"}</td>
            <td>{fmtTime(p.updated_at)}</td>
            {caps.profilesDelete && (
              <td>
                {!p.in_use && (
                  <ConfirmButton confirmLabel="Delete" busy={remove.busy} onConfirm={() => void remove.run(p.name)}>
                    Delete
                  </ConfirmButton>
                )}
              </td>
            )}
          </tr>
        )}
      </ListTable>
    </Panel>
  );
}
