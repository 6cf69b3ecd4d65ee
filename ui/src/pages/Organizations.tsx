import { useState } from "react";
import { api, call } from "../api/client";
import type { Organization, Plan } from "../api/types";
import { useSignedIn } from "../auth";
import { Choice, FormPanel, ListPage, useCreate } from "../components/resource";
import { ConfirmButton, Field } from "../components/ui";
import { fmtTime } from "../lib/format";
import { useAction, useChange, useResource } from "../lib/hooks";

const PLANS: Plan[] = ["free", "pro", "enterprise"];

/** The platform operator's view of every organization. */
export function OrganizationsPage() {
  const { me } = useSignedIn();
  const orgs = useResource(() => call(api.GET("/organizations")));
  const remove = useChange(orgs, (org: Organization) => call(api.DELETE("/organizations/{org_id}", { params: { path: { org_id: org.id } } })));
  const replan = useAction(async (org: Organization, plan: Plan) => {
    orgs.replace(await call(api.PUT("/organizations/{org_id}", { params: { path: { org_id: org.id } }, body: { plan } })));
  });
  const busy = remove.busy || replan.busy;
  return (
    <ListPage
      title="Organizations"
      create={{ label: "Create an organization", testid: "org-new", form: (done) => <OrgForm onDone={done} />, then: orgs.reload }}
      list={orgs}
      errors={[remove.error, replan.error]}
      empty="No organizations."
      testid="org-table"
      head={["Name", "Slug", "Plan", "Created", ""]}
    >
      {(o) => {
        const own = o.id === me.organization.id;
        return (
          <tr key={o.id} data-testid="org-row" data-slug={o.slug}>
            <td>
              {o.name} {own && <span className="muted small">(yours)</span>}
            </td>
            <td className="mono">{o.slug}</td>
            <td>
              <Choice value={o.plan} options={PLANS} disabled={busy} onChange={(p) => void replan.run(o, p as Plan)} aria-label={`Plan of ${o.name}`} />
            </td>
            <td>{fmtTime(o.created_at)}</td>
            <td>
              {!own && (
                <ConfirmButton testid="org-delete" confirmLabel="Delete with its users, keys and data" busy={busy} onConfirm={() => void remove.run(o)}>
                  Delete
                </ConfirmButton>
              )}
            </td>
          </tr>
        );
      }}
    </ListPage>
  );
}

function OrgForm({ onDone }: { onDone: () => void }) {
  const [name, setName] = useState("");
  const [slug, setSlug] = useState("");
  const [plan, setPlan] = useState<Plan>("free");
  const [adminEmail, setAdminEmail] = useState("");
  const save = useCreate(async () => {
    const org = await call(api.POST("/organizations", { body: { name, slug: slug || null, plan, admin_email: adminEmail || null } }));
    if (!org.admin_password || !org.admin_email) return null;
    return { title: "Organization created", label: `Password of its first admin, ${org.admin_email}`, value: org.admin_password, testid: "org-admin-password" };
  }, onDone);
  return (
    <FormPanel title="Create an organization" testid="org-form" action={save} fields={["name", "slug", "plan", "admin_email", "settings"]} submit={{ label: "Create", testid: "org-save" }} onCancel={onDone}>
      <div className="grid2">
        <Field label="Name" name="name">
          <input required value={name} onChange={(e) => setName(e.target.value)} data-testid="org-name-input" />
        </Field>
        <Field label="Slug (optional)" name="slug">
          <input className="mono" value={slug} onChange={(e) => setSlug(e.target.value)} />
        </Field>
        <Field label="Plan" name="plan">
          <Choice value={plan} options={PLANS} onChange={setPlan} />
        </Field>
        <Field label="First admin's email (optional)" name="admin_email" hint="their password is shown once">
          <input type="email" value={adminEmail} onChange={(e) => setAdminEmail(e.target.value)} data-testid="org-admin-email" />
        </Field>
      </div>
    </FormPanel>
  );
}
