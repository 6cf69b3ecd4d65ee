import { useState } from "react";
import { api, call } from "../api/client";
import type { Role, User } from "../api/types";
import { useSignedIn } from "../auth";
import { Choice, FormPanel, ListPage, useCreate } from "../components/resource";
import { ConfirmButton, Field } from "../components/ui";
import { fmtAgo, fmtTime } from "../lib/format";
import { useAction, useResource } from "../lib/hooks";

const ROLES: Role[] = ["admin", "user", "viewer"];
const ROLE_HELP: Record<Role, string> = {
  admin: "everything, including users, keys, webhooks and workers",
  user: "submits and cancels tasks, stores credentials",
  viewer: "reads only",
};

export function UsersPage() {
  const { me } = useSignedIn();
  const users = useResource(() => call(api.GET("/admin/users")));
  const update = useAction(async (u: User, change: { role?: Role; is_active?: boolean }) => {
    users.replace(await call(api.PATCH("/admin/users/{user_id}", { params: { path: { user_id: u.id } }, body: change })));
  });
  return (
    <ListPage
      title="Users"
      create={{ label: "Add a user", testid: "user-new", form: (done) => <UserForm onDone={done} />, then: users.reload }}
      list={users}
      errors={[update.error]}
      empty="No users."
      testid="user-table"
      head={["Email", "Name", "Role", "Active", "Last sign-in", "Created", ""]}
    >
      {(u) => {
        const self = u.id === me.user.id;
        return (
          <tr key={u.id} data-testid="user-row" data-email={u.email} className={u.is_active ? "" : "inactive"}>
            <td>
              {u.email} {self && <span className="muted small">(you)</span>}
            </td>
            <td>{u.name}</td>
            <td>
              {self ? (
                u.role
              ) : (
                <Choice value={u.role} options={ROLES} disabled={update.busy} onChange={(role) => void update.run(u, { role })} aria-label={`Role of ${u.email}`} data-testid="user-role-select" />
              )}
            </td>
            <td>{u.is_active ? "yes" : "no"}</td>
            <td title={fmtTime(u.last_login)}>{fmtAgo(u.last_login)}</td>
            <td>{fmtTime(u.created_at)}</td>
            <td>
              {!self &&
                (u.is_active ? (
                  <ConfirmButton testid="user-deactivate" confirmLabel="Deactivate (ends their sessions)" busy={update.busy} onConfirm={() => void update.run(u, { is_active: false })}>
                    Deactivate
                  </ConfirmButton>
                ) : (
                  <button type="button" className="secondary" disabled={update.busy} onClick={() => void update.run(u, { is_active: true })} data-testid="user-reactivate">
                    Reactivate
                  </button>
                ))}
            </td>
          </tr>
        );
      }}
    </ListPage>
  );
}

function UserForm({ onDone }: { onDone: () => void }) {
  const [email, setEmail] = useState("");
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("user");
  const [password, setPassword] = useState("");
  const save = useCreate(async () => {
    const created = await call(api.POST("/admin/users", { body: { email, name, role, password: password || null } }));
    if (!created.password) return null;
    return { title: "User invited", label: `One-time password for ${created.email}`, value: created.password, testid: "user-invite-password" };
  }, onDone);
  return (
    <FormPanel title="Add a user" testid="user-form" action={save} fields={["email", "name", "role", "password"]} submit={{ label: "Add user", testid: "user-save" }} onCancel={onDone} autoComplete="off">
      <div className="grid3">
        <Field label="Email" name="email">
          <input required type="email" value={email} onChange={(e) => setEmail(e.target.value)} data-testid="user-email-input" />
        </Field>
        <Field label="Name" name="name">
          <input value={name} onChange={(e) => setName(e.target.value)} />
        </Field>
        <Field label="Role" name="role" hint={ROLE_HELP[role]}>
          <Choice value={role} options={ROLES} onChange={setRole} data-testid="user-role-input" />
        </Field>
      </div>
      <Field label="Password (optional)" name="password" hint="leave empty to invite: a one-time password is shown once">
        <input type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} />
      </Field>
    </FormPanel>
  );
}
