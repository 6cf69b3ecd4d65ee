import { useState, type FormEvent, type ReactNode } from "react";
import { ApiError, plainMessage } from "../api/errors";
import { startSso } from "../api/sso";
import { SecondFactorNeeded, useAuth } from "../auth";
import { useAction } from "../lib/hooks";

function loginMessage(error: unknown): string {
  if (error instanceof ApiError && error.status === 401) return "Wrong email or password.";
  if (error instanceof ApiError && error.status === 403) return "This account cannot sign in (it may be deactivated).";
  return plainMessage(error);
}

function ssoMessage(error: unknown): string {
  if (error instanceof ApiError && (error.status === 404 || error.code === "sso_not_configured"))
    return "No organization with that slug has single sign-on set up.";
  return plainMessage(error);
}

export function LoginPage() {
  const { signIn, verifySecondFactor, notice, ssoSecondFactor } = useAuth();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [second, setSecond] = useState<SecondFactorNeeded | null>(ssoSecondFactor);
  const [sso, setSso] = useState(false);
  const login = useAction(async () => {
    try {
      await signIn(email.trim(), password);
    } catch (err) {
      if (!(err instanceof SecondFactorNeeded)) throw err;
      setSecond(err);
    }
  });

  if (second) return <SecondFactor needed={second} verify={verifySecondFactor} onBack={() => setSecond(null)} />;
  if (sso) return <SsoForm onBack={() => setSso(false)} />;

  return (
    <AuthCard testid="login-form" onSubmit={() => void login.run()}>
      <p className="muted">Sign in to your organization.</p>
      {notice && !login.error && (
        <div className="notice" role="status" data-testid="login-notice">
          {notice}
        </div>
      )}
      <TextInput label="Email" type="email" autoComplete="username" value={email} onChange={setEmail} testid="login-email" />
      <TextInput label="Password" type="password" autoComplete="current-password" value={password} onChange={setPassword} testid="login-password" />
      <Failure error={login.error} testid="login-error" say={loginMessage} />
      <button type="submit" disabled={login.busy} data-testid="login-submit">
        {login.busy ? "Signing in…" : "Sign in"}
      </button>
      <button type="button" className="secondary" onClick={() => setSso(true)} data-testid="login-sso">
        Sign in with SSO
      </button>
      <p className="small muted">
        Programs use API keys instead: see the <a href="/docs">API docs</a>.
      </p>
    </AuthCard>
  );
}

/** Single sign-on: the organization's slug, then its identity provider; the browser comes back signed in. */
function SsoForm({ onBack }: { onBack: () => void }) {
  const [slug, setSlug] = useState("");
  const go = useAction(() => startSso(slug.trim().toLowerCase()));
  return (
    <AuthCard testid="sso-form" onSubmit={() => void go.run()}>
      <p className="muted">Sign in with your organization's identity provider.</p>
      <TextInput label="Organization (its slug, e.g. acme)" autoComplete="organization" value={slug} onChange={setSlug} testid="sso-slug" autoFocus />
      <Failure error={go.error} testid="sso-error" say={ssoMessage} />
      <button type="submit" disabled={go.busy} data-testid="sso-submit">
        {go.busy ? "Opening…" : "Continue"}
      </button>
      <button type="button" className="secondary" onClick={onBack} data-testid="sso-back">
        Back
      </button>
    </AuthCard>
  );
}

/** The password was accepted and the account has a second factor: a code from the authenticator app, or a
 * recovery code. An account that must enrol one first is told how, in words. */
function SecondFactor({
  needed,
  verify,
  onBack,
}: {
  needed: SecondFactorNeeded;
  verify: (challenge: string, code: string) => Promise<void>;
  onBack: () => void;
}) {
  const [code, setCode] = useState("");
  const check = useAction(() => verify(needed.challenge, code.trim()));
  return (
    <AuthCard testid="mfa-form" onSubmit={() => void check.run()}>
      {needed.enrolmentRequired ? (
        <p data-testid="mfa-enrol-required">
          Your organization requires a second factor and this account has none yet. Set one up with the API
          (<code>POST /auth/mfa/enrol</code>, see the <a href="/docs">API docs</a>), then sign in again.
        </p>
      ) : (
        <>
          <p className="muted">Enter the code from your authenticator app, or a recovery code.</p>
          <TextInput label="Code" autoComplete="one-time-code" inputMode="numeric" autoFocus value={code} onChange={setCode} testid="mfa-code" />
          <Failure
            error={check.error}
            testid="mfa-error"
            say={(e) => (e instanceof ApiError && e.status === 401 ? "That code is not right, or it expired: sign in again." : plainMessage(e))}
          />
          <button type="submit" disabled={check.busy} data-testid="mfa-submit">
            {check.busy ? "Checking…" : "Continue"}
          </button>
        </>
      )}
      <button type="button" className="secondary" onClick={onBack} data-testid="mfa-back">
        Back
      </button>
    </AuthCard>
  );
}

function AuthCard({ testid, onSubmit, children }: { testid: string; onSubmit: () => void; children: ReactNode }) {
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onSubmit();
  };
  return (
    <main className="login">
      <form className="panel login-form" onSubmit={submit} data-testid={testid}>
        <h1>browserfleet</h1>
        {children}
      </form>
    </main>
  );
}

function TextInput({
  label,
  value,
  onChange,
  testid,
  ...input
}: {
  label: string;
  value: string;
  onChange: (v: string) => void;
  testid: string;
  type?: string;
  autoComplete?: string;
  inputMode?: "numeric";
  autoFocus?: boolean;
}) {
  return (
    <label className="field">
      <span className="label">{label}</span>
      <input required value={value} onChange={(e) => onChange(e.target.value)} data-testid={testid} {...input} />
    </label>
  );
}

function Failure({ error, testid, say }: { error: unknown; testid: string; say: (e: unknown) => string }) {
  if (!error) return null;
  return (
    <div className="error" role="alert" data-testid={testid}>
      {say(error)}
    </div>
  );
}
