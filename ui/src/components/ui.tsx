/** Small building blocks shared by the screens. */
import { createContext, useContext, useEffect, useState, type ReactNode } from "react";
import { rawFetch } from "../api/client";
import { fieldError, needsGeneralNote, plainMessage } from "../api/errors";

export function Page({ title, actions, children }: { title: string; actions?: ReactNode; children: ReactNode }) {
  return (
    <section className="page">
      <header className="page-head">
        <h1>{title}</h1>
        <div className="row">{actions}</div>
      </header>
      {children}
    </section>
  );
}

export function Panel({ title, children, actions, testid }: { title?: string; children: ReactNode; actions?: ReactNode; testid?: string }) {
  return (
    <div className="panel" data-testid={testid}>
      {(title || actions) && (
        <div className="panel-head">
          {title && <h2>{title}</h2>}
          <div className="row">{actions}</div>
        </div>
      )}
      {children}
    </div>
  );
}

/** An API (or other) error in plain words. With `fields`, a 422 already shown at one of them is not repeated. */
export function ErrorNote({ error, fields, testid = "error" }: { error: unknown; fields?: readonly string[]; testid?: string }) {
  if (!error) return null;
  if (fields && !needsGeneralNote(error, fields)) return null;
  return (
    <div className="error" role="alert" data-testid={testid}>
      {plainMessage(error)}
    </div>
  );
}

/** The error of the form a Field sits in: a 422 is shown at its field without each Field being told. */
export const FormError = createContext<unknown>(null);

export function Field({
  label,
  name,
  error,
  hint,
  children,
}: {
  label: string;
  name: string;
  error?: unknown;
  hint?: ReactNode;
  children: ReactNode;
}) {
  const formError = useContext(FormError);
  const message = fieldError(error === undefined ? formError : error, name);
  return (
    <label className={message ? "field invalid" : "field"} data-field={name}>
      <span className="label">{label}</span>
      {children}
      {hint && !message && <span className="hint">{hint}</span>}
      {message && (
        <span className="field-error" role="alert" data-testid={`field-error-${name}`}>
          {message}
        </span>
      )}
    </label>
  );
}

/** A secret the API shows once (invite code, API key, one-time password, signing secret). */
export function OnceSecret({ label, value, testid, onDone }: { label: string; value: string; testid: string; onDone: () => void }) {
  const [copied, setCopied] = useState(false);
  return (
    <div className="once" role="status">
      <div className="label">{label}</div>
      <code className="secret" data-testid={testid}>
        {value}
      </code>
      <p className="hint">Shown only this once: copy it now. It cannot be displayed again.</p>
      <div className="row">
        <button
          type="button"
          className="secondary"
          onClick={() => {
            void navigator.clipboard?.writeText(value).then(() => setCopied(true), () => setCopied(false));
          }}
        >
          {copied ? "Copied" : "Copy"}
        </button>
        <button type="button" onClick={onDone} data-testid={`${testid}-done`}>
          Done
        </button>
      </div>
    </div>
  );
}

/** A destructive action asks once more inline (never window.confirm, which automated browsers dismiss). */
export function ConfirmButton({
  children,
  confirmLabel = "Confirm",
  onConfirm,
  busy,
  testid,
  danger = true,
}: {
  children: ReactNode;
  confirmLabel?: string;
  onConfirm: () => void;
  busy?: boolean;
  testid?: string;
  danger?: boolean;
}) {
  const [asking, setAsking] = useState(false);
  if (!asking)
    return (
      <button type="button" className={danger ? "danger" : ""} disabled={busy} onClick={() => setAsking(true)} data-testid={testid}>
        {children}
      </button>
    );
  return (
    <span className="confirm row">
      <button
        type="button"
        className={danger ? "danger" : ""}
        disabled={busy}
        onClick={() => {
          setAsking(false);
          onConfirm();
        }}
        data-testid={testid ? `${testid}-confirm` : undefined}
      >
        {confirmLabel}
      </button>
      <button type="button" className="secondary" onClick={() => setAsking(false)}>
        Keep
      </button>
    </span>
  );
}

export function StatusBadge({ status, testid }: { status: string; testid?: string }) {
  return (
    <span className={`badge status-${status}`} data-testid={testid} data-status={status}>
      {status.replace("_", " ")}
    </span>
  );
}

export function Forbidden({ what }: { what: string }) {
  return (
    <div className="panel" role="alert" data-testid="forbidden">
      <h2>Not allowed</h2>
      <p>Your role does not permit {what}. Ask an admin of your organization if you need it.</p>
    </div>
  );
}

export function Loading({ what = "Loading" }: { what?: string }) {
  return <p className="muted">{what}…</p>;
}

export function Empty({ children }: { children: ReactNode }) {
  return <p className="muted empty">{children}</p>;
}

/** An image behind the bearer token: fetched as a blob and shown from an object URL. */
export function AuthImage({ src, alt, testid, className }: { src: string; alt: string; testid?: string; className?: string }) {
  const [url, setUrl] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    let objectUrl: string | null = null;
    let live = true;
    rawFetch(src)
      .then((r) => r.blob())
      .then((b) => {
        if (!live) return;
        objectUrl = URL.createObjectURL(b);
        setUrl(objectUrl);
      })
      .catch((e: unknown) => live && setError(e));
    return () => {
      live = false;
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    };
  }, [src]);
  if (error) return <ErrorNote error={error} />;
  if (!url) return <Loading what="Loading image" />;
  return <img src={url} alt={alt} data-testid={testid} className={className} />;
}

export function Json({ value, testid }: { value: unknown; testid?: string }) {
  return (
    <pre className="json" data-testid={testid}>
      {JSON.stringify(value, null, 2)}
    </pre>
  );
}
