/** Who is signed in: tokens (api/session), the `/auth/me` answer, and what they may do (api/capabilities). */
import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { api, call } from "./api/client";
import { capabilities, type Caps } from "./api/capabilities";
import { ApiError, plainMessage } from "./api/errors";
import { orgEvents } from "./api/events";
import { publicApi, session } from "./api/session";
import { ssoCodeAtLoad } from "./api/sso";
import type { LoginReply, Me } from "./api/types";

type Status = "loading" | "signed-out" | "signed-in";

interface AuthValue {
  status: Status;
  me: Me | null;
  caps: Caps | null;
  /** why the person is on the sign-in screen again, in words */
  notice: string | null;
  /** the last sign-out was the person's own (not an expiry) */
  signedOutByUser: boolean;
  /** throws SecondFactorNeeded when the account has a second factor (or must enrol one) */
  signIn: (email: string, password: string) => Promise<void>;
  /** a single sign-on that came back and needs a second factor (the sign-in page asks for it) */
  ssoSecondFactor: SecondFactorNeeded | null;
  /** the code for a SecondFactorNeeded's challenge (TOTP or a recovery code) */
  verifySecondFactor: (challenge: string, code: string) => Promise<void>;
  signOut: () => Promise<void>;
}

/** The password was right and a second factor is due: `POST /auth/mfa/verify` with the challenge and a code. */
export class SecondFactorNeeded extends Error {
  constructor(
    readonly challenge: string,
    readonly enrolmentRequired: boolean,
  ) {
    super("a second factor is required");
  }
}

const AuthContext = createContext<AuthValue | null>(null);

/** `/auth/me` does not say (yet) whether the caller is the platform operator: a field named so is used when a
 * newer gateway sends it, else an admin's one `GET /organizations` tells (operators only get a 200). */
async function isOperator(me: Me): Promise<boolean> {
  const extra = me as unknown as Record<string, unknown>;
  for (const k of ["operator", "is_operator", "platform_operator"]) {
    if (typeof extra[k] === "boolean") return extra[k] as boolean;
  }
  if (me.role !== "admin") return false;
  const { response } = await api.GET("/organizations");
  return response.ok;
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [ssoCode] = useState(ssoCodeAtLoad);
  const [status, setStatus] = useState<Status>(session.hasTokens() || ssoCode ? "loading" : "signed-out");
  const [ssoSecondFactor, setSsoSecondFactor] = useState<SecondFactorNeeded | null>(null);
  const [me, setMe] = useState<Me | null>(null);
  const [operator, setOperator] = useState(false);
  const [notice, setNotice] = useState<string | null>(null);
  const [signedOutByUser, setSignedOutByUser] = useState(false);

  const loadMe = useCallback(async () => {
    const who = await call(api.GET("/auth/me"));
    const op = await isOperator(who).catch(() => false);
    setMe(who);
    setOperator(op);
    setStatus("signed-in");
  }, []);

  useEffect(() => {
    // with an SSO code, the exchange below signs in (or out) instead
    if (session.hasTokens() && !ssoCode) {
      loadMe().catch((e: unknown) => {
        session.clear("signed-out");
        setStatus("signed-out");
        if (!(e instanceof ApiError && e.status === 401)) setNotice("Could not load your account: " + String(e));
      });
    }
    return session.subscribe((reason) => {
      if (reason === "expired") {
        setNotice("Your session has ended. Please sign in again.");
        setSignedOutByUser(false);
        setStatus("signed-out");
        setMe(null);
      }
    });
  }, [loadMe, ssoCode]);

  const caps = useMemo(() => (me ? capabilities(me.role, operator) : null), [me, operator]);

  useEffect(() => {
    if (status === "signed-in" && me && caps) orgEvents.start(me.organization.id, caps.eventsTicket);
    else orgEvents.stop();
  }, [status, me, caps]);

  const finishSignIn = useCallback(
    async (pair: Parameters<typeof session.signedIn>[0]) => {
      session.signedIn(pair);
      setNotice(null);
      setSignedOutByUser(false);
      await loadMe();
    },
    [loadMe],
  );

  /** The login's answer: tokens, or a second factor to ask for. */
  const landed = useCallback(
    async (reply: LoginReply) => {
      if ("mfa_required" in reply) throw new SecondFactorNeeded(reply.challenge, reply.enrolment_required);
      await finishSignIn(reply);
    },
    [finishSignIn],
  );

  useEffect(() => {
    if (!ssoCode) return;
    session.clear("signed-out"); // whoever was signed in in this tab, the sign-in just made replaces them
    call(publicApi.POST("/auth/sso/exchange", { body: { code: ssoCode } }))
      .then(landed)
      .catch((e: unknown) => {
        if (e instanceof SecondFactorNeeded) setSsoSecondFactor(e);
        else setNotice(`Single sign-on did not complete: ${plainMessage(e)}`);
        setStatus("signed-out");
      });
  }, [ssoCode, landed]);

  const signIn = useCallback(
    async (email: string, password: string) => {
      await landed(await call(publicApi.POST("/auth/login", { body: { email, password } })));
    },
    [landed],
  );

  const verifySecondFactor = useCallback(
    async (challenge: string, code: string) => {
      await finishSignIn(await call(publicApi.POST("/auth/mfa/verify", { body: { challenge, code } })));
    },
    [finishSignIn],
  );

  const signOut = useCallback(async () => {
    orgEvents.stop();
    setSignedOutByUser(true);
    setStatus("signed-out");
    setMe(null);
    setNotice(null);
    await session.signOut();
  }, []);

  const value = useMemo(
    () => ({ status, me, caps, notice, signedOutByUser, signIn, ssoSecondFactor, verifySecondFactor, signOut }),
    [status, me, caps, notice, signedOutByUser, signIn, ssoSecondFactor, verifySecondFactor, signOut],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthValue {
  const v = useContext(AuthContext);
  if (!v) throw new Error("useAuth outside AuthProvider");
  return v;
}

/** For screens rendered only when signed in. */
export function useSignedIn(): { me: Me; caps: Caps } {
  const { me, caps } = useAuth();
  if (!me || !caps) throw new Error("not signed in");
  return { me, caps };
}
