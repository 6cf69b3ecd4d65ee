/** What every resource screen (API keys, users, credentials, webhooks, workers, …) shares, so that a page
 * states only its own columns, fields and words: the page with its "create" button and form, the list as a
 * table with its loading, empty and error states, and a create form in a panel. */
import { useState, type FormEvent, type ReactNode } from "react";
import { useAction } from "../lib/hooks";
import { Empty, ErrorNote, FormError, Loading, OnceSecret, Page, Panel } from "./ui";


interface Create {
  label: string;
  testid: string;
  /** the form; `done` closes it (after a save, or on Cancel) */
  form: (done: () => void) => ReactNode;
  /** after the form closes (e.g. reload the list) */
  then?: () => void;
}

/** A page whose "create" button (when `create` is given) opens a form above the list. */
export function ResourcePage({ title, create, intro, children }: { title: string; create?: Create | false; intro?: ReactNode; children: ReactNode }) {
  const [open, setOpen] = useState(false);
  const done = () => {
    setOpen(false);
    if (create) create.then?.();
  };
  return (
    <Page
      title={title}
      actions={
        create &&
        !open && (
          <button type="button" onClick={() => setOpen(true)} data-testid={create.testid}>
            {create.label}
          </button>
        )
      }
    >
      {intro}
      {create && open && create.form(done)}
      {children}
    </Page>
  );
}

interface ListState<T> {
  data: readonly T[] | undefined;
  error: unknown;
  loading: boolean;
}

interface ListTableProps<T> {
  list: ListState<T>;
  errors?: unknown[];
  empty: ReactNode;
  testid: string;
  head: (string | false)[];
  children: (item: T) => ReactNode;
}

/** A list from the API as a table: "Loading…" until the first answer, `empty` when there is nothing, the
 * errors of the list and of its row actions in plain words. A `false` heading is a column left out. */
export function ListTable<T>({ list, errors = [], empty, testid, head, children }: ListTableProps<T>) {
  return (
    <>
      {errors.map((e, i) => (
        <ErrorNote key={i} error={e} />
      ))}
      <ErrorNote error={list.error} />
      {!list.data ? (
        list.loading && <Loading />
      ) : !list.data.length ? (
        <Empty>{empty}</Empty>
      ) : (
        <table className="table" data-testid={testid}>
          <thead>
            <tr>
              {head
                .filter((h) => h !== false)
                .map((h, i) => (
                  <th key={i}>{h}</th>
                ))}
            </tr>
          </thead>
          <tbody>{list.data.map(children)}</tbody>
        </table>
      )}
    </>
  );
}

/** A page that is its list: `ResourcePage` (with its "create" button and form) around a `ListTable`. */
export function ListPage<T>({ title, create, ...table }: { title: string; create?: Create | false } & ListTableProps<T>) {
  return (
    <ResourcePage title={title} create={create}>
      <ListTable {...table} />
    </ResourcePage>
  );
}

interface Action {
  busy: boolean;
  error: unknown;
  run: (...args: never[]) => unknown;
  /** set by `useCreate` once the answer carried a secret */
  secret?: Secret | null;
}

/** A secret a created thing's answer carries (API key, invite code, one-time password), with its words. */
export interface Secret {
  title: string;
  label: string;
  value: string;
  testid: string;
  panel?: string;
  note?: ReactNode;
}

/** The save of a create form: `send` posts the form and returns the secret its answer carried, which
 * `FormPanel` then shows once in the form's place; with no secret (null) the form just closes. */
export function useCreate(send: () => Promise<Secret | null>, onDone: () => void) {
  const [secret, setSecret] = useState<Secret | null>(null);
  const action = useAction(async () => {
    const shown = await send();
    if (shown) setSecret(shown);
    else onDone();
  });
  return { ...action, secret };
}

/** A form in a panel: its fields, the errors no field shows, submit and Cancel; after a `useCreate` save
 * that got a secret, that secret instead (Done closes it like Cancel). Submitting runs `action` (or
 * `onSubmit`, for a form that checks something first). */
export function FormPanel({
  title,
  testid,
  action,
  fields,
  submit,
  onCancel,
  onSubmit,
  autoComplete,
  children,
}: {
  title: string;
  testid: string;
  action: Action;
  fields: readonly string[];
  submit: { label: string; testid: string };
  onCancel: () => void;
  onSubmit?: () => void;
  autoComplete?: "off";
  children: ReactNode;
}) {
  const send = (e: FormEvent) => {
    e.preventDefault();
    if (onSubmit) onSubmit();
    else void action.run();
  };
  if (action.secret) {
    const { note, ...secret } = action.secret;
    return (
      <SecretPanel {...secret} onDone={onCancel}>
        {note}
      </SecretPanel>
    );
  }
  return (
    <Panel title={title} testid={testid}>
      <form onSubmit={send} autoComplete={autoComplete}>
        <FormError.Provider value={action.error}>{children}</FormError.Provider>
        <ErrorNote error={action.error} fields={fields} />
        <div className="row">
          <button type="submit" disabled={action.busy} data-testid={submit.testid}>
            {submit.label}
          </button>
          <button type="button" className="secondary" onClick={onCancel}>
            Cancel
          </button>
        </div>
      </form>
    </Panel>
  );
}

/** A created thing's secret, shown once in place of its form. */
export function SecretPanel({ title, label, value, testid, panel, onDone, children }: { title: string; label: string; value: string; testid: string; panel?: string; onDone: () => void; children?: ReactNode }) {
  return (
    <Panel title={title} testid={panel}>
      <OnceSecret label={label} value={value} testid={testid} onDone={onDone} />
      {children}
    </Panel>
  );
}

/** A list of checkboxes choosing some of `options` ([value, help] pairs). */
export function Checks<T extends string>({ options, chosen, onChange, testid }: { options: readonly (readonly [T, string?])[]; chosen: readonly T[]; onChange: (next: T[]) => void; testid?: (value: T) => string }) {
  const toggle = (v: T) => onChange(chosen.includes(v) ? chosen.filter((x) => x !== v) : [...chosen, v]);
  return (
    <div className="checks">
      {options.map(([v, help]) => (
        <label key={v} className="check" title={help}>
          <input type="checkbox" checked={chosen.includes(v)} onChange={() => toggle(v)} data-testid={testid?.(v)} /> {v}
          {help && <span className="muted small"> — {help}</span>}
        </label>
      ))}
    </div>
  );
}

/** A <select> of plain string options. */
export function Choice<T extends string | number>({
  value,
  options,
  onChange,
  ...rest
}: {
  value: T;
  options: readonly (T | readonly [T, string])[];
  onChange: (v: T) => void;
  disabled?: boolean;
  "aria-label"?: string;
  "data-testid"?: string;
}) {
  return (
    <select value={value} onChange={(e) => onChange((typeof value === "number" ? Number(e.target.value) : e.target.value) as T)} {...rest}>
      {options.map((o) => {
        const [v, label] = Array.isArray(o) ? (o as readonly [T, string]) : [o as T, String(o)];
        return (
          <option key={v} value={v}>
            {label}
          </option>
        );
      })}
    </select>
  );
}
