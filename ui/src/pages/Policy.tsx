import { useState, type FormEvent } from "react";
import { api, call } from "../api/client";
import type { OrgPolicy } from "../api/types";
import { useSignedIn } from "../auth";
import { ErrorNote, Field, Loading, Page, Panel } from "../components/ui";
import { splitList } from "../lib/format";
import { useAction, useApi } from "../lib/hooks";

const FIELDS = ["allowed_domains", "allow_evaluate", "proxy"];

/** Every member reads the policy; admins change it (`PUT /api/v1/org/policy`). */
export function PolicyPage() {
  const { caps } = useSignedIn();
  const policy = useApi(() => call(api.GET("/api/v1/org/policy")), []);
  return (
    <Page title="Organization policy">
      <p className="hint">
        What every task of the organization is held to, on top of its own options: a request must satisfy both the task's and
        the organization's allowed domains; <code>evaluate</code> steps run only when allowed; the task's proxy wins, else this one.
        Workers apply a change to tasks starting a few seconds later.
      </p>
      <ErrorNote error={policy.error} />
      {policy.loading && !policy.data ? (
        <Loading />
      ) : (
        policy.data &&
        (caps.policyWrite ? (
          <PolicyForm policy={policy.data} onSaved={(p) => policy.setData(() => p)} />
        ) : (
          <PolicyView policy={policy.data} />
        ))
      )}
    </Page>
  );
}

function PolicyView({ policy }: { policy: OrgPolicy }) {
  return (
    <Panel testid="policy-view">
      <dl className="facts">
        <div>
          <dt>Allowed domains</dt>
          <dd>{policy.allowed_domains?.length ? policy.allowed_domains.join(", ") : "any public host"}</dd>
        </div>
        <div>
          <dt>Evaluate steps</dt>
          <dd>{policy.allow_evaluate ? "allowed" : "not allowed (unless the operator allows them)"}</dd>
        </div>
        <div>
          <dt>Proxy</dt>
          <dd className="mono">{policy.proxy ? `${policy.proxy.server}${policy.proxy.username ? ` as ${policy.proxy.username}` : ""}` : "none"}</dd>
        </div>
      </dl>
    </Panel>
  );
}

function PolicyForm({ policy, onSaved }: { policy: OrgPolicy; onSaved: (p: OrgPolicy) => void }) {
  const [domains, setDomains] = useState((policy.allowed_domains ?? []).join("\n"));
  const [evaluate, setEvaluate] = useState(policy.allow_evaluate ?? false);
  const [server, setServer] = useState(policy.proxy?.server ?? "");
  const [username, setUsername] = useState(policy.proxy?.username ?? "");
  const [password, setPassword] = useState(policy.proxy?.password ?? "");
  const [bypass, setBypass] = useState(policy.proxy?.bypass ?? "");
  const [saved, setSaved] = useState(false);
  const save = useAction(async () => {
    const list = splitList(domains);
    const body: OrgPolicy = {
      allowed_domains: list.length ? list : null,
      allow_evaluate: evaluate,
      proxy: server ? { server, username: username || null, password: password || null, bypass: bypass || null } : null,
    };
    onSaved(await call(api.PUT("/api/v1/org/policy", { body })));
    setSaved(true);
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(false);
    void save.run();
  };
  return (
    <Panel testid="policy-form">
      <form onSubmit={submit}>
        <Field label="Allowed domains" name="allowed_domains" error={save.error} hint="one per line; example.com also allows its subdomains, *.example.com only them; empty = any public host">
          <textarea rows={5} className="code" value={domains} onChange={(e) => setDomains(e.target.value)} data-testid="policy-domains" />
        </Field>
        <label className="check">
          <input type="checkbox" checked={evaluate} onChange={(e) => setEvaluate(e.target.checked)} data-testid="policy-evaluate" /> Allow{" "}
          <code>evaluate</code> steps (JavaScript in the page)
        </label>
        <fieldset>
          <legend>Upstream proxy for tasks that name none</legend>
          <div className="grid2">
            <Field label="Server" name="proxy.server" error={save.error} hint="http://host:port, no credentials in the URL">
              <input className="mono" value={server} onChange={(e) => setServer(e.target.value)} data-testid="policy-proxy-server" />
            </Field>
            <Field label="Username" name="proxy.username" error={save.error}>
              <input value={username} onChange={(e) => setUsername(e.target.value)} />
            </Field>
            <Field label="Password" name="proxy.password" error={save.error} hint="a vault reference: {{ secrets.NAME }}">
              <input className="mono" value={password} onChange={(e) => setPassword(e.target.value)} placeholder="{{ secrets.PROXY_PW }}" />
            </Field>
            <Field label="Bypass" name="proxy.bypass" error={save.error}>
              <input value={bypass} onChange={(e) => setBypass(e.target.value)} />
            </Field>
          </div>
          <Field label="" name="proxy" error={save.error}>
            <span />
          </Field>
        </fieldset>
        <ErrorNote error={save.error} fields={FIELDS} />
        {saved && (
          <div className="notice" role="status">
            Saved.
          </div>
        )}
        <button type="submit" disabled={save.busy} data-testid="policy-save">
          Save policy
        </button>
      </form>
    </Panel>
  );
}
