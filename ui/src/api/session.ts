/** The signed-in tokens: kept in sessionStorage (this tab only, gone when it closes), never in localStorage or
 * a cookie. The access token is short-lived; a 401 or an access token about to expire is answered by one
 * rotation of the refresh token (single-flight, so concurrent requests never rotate it twice). */
import createClient from "openapi-fetch";
import type { paths } from "./generated/schema";
import type { TokenPair } from "./types";

interface Stored {
  access: string;
  refresh: string;
  accessExpiresAt: number; // epoch ms
}

const KEY = "browserfleet.session";
const EARLY_REFRESH_MS = 30_000;

/** A client without the auth middleware: login, refresh and logout carry their own credential. */
export const publicApi = createClient<paths>({ baseUrl: "" });

type Listener = (reason: "signed-in" | "refreshed" | "signed-out" | "expired") => void;
const listeners = new Set<Listener>();
let current: Stored | null = load();
let refreshing: Promise<string | null> | null = null;

function load(): Stored | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    const parsed = raw ? (JSON.parse(raw) as Stored) : null;
    return parsed && parsed.access && parsed.refresh ? parsed : null;
  } catch {
    return null;
  }
}

function save(pair: TokenPair): void {
  current = {
    access: pair.access_token,
    refresh: pair.refresh_token,
    accessExpiresAt: Date.now() + pair.expires_in * 1000,
  };
  try {
    sessionStorage.setItem(KEY, JSON.stringify(current));
  } catch {
    // private mode without storage: the session lives in memory only
  }
}

function emit(reason: Parameters<Listener>[0]): void {
  for (const l of [...listeners]) l(reason);
}

export const session = {
  hasTokens(): boolean {
    return current !== null;
  },
  accessToken(): string | null {
    return current?.access ?? null;
  },
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
  signedIn(pair: TokenPair): void {
    save(pair);
    emit("signed-in");
  },
  /** Forget the tokens. `expired`: the refresh token was refused, so the person must sign in again. */
  clear(reason: "signed-out" | "expired"): void {
    const had = current !== null;
    current = null;
    try {
      sessionStorage.removeItem(KEY);
    } catch {
      // nothing stored
    }
    if (had) emit(reason);
  },
  /** The access token, rotated first when it expires within 30 s (for WebSockets, which cannot retry on 401). */
  async freshAccessToken(): Promise<string | null> {
    if (!current) return null;
    if (current.accessExpiresAt - Date.now() > EARLY_REFRESH_MS) return current.access;
    return (await session.refresh()) ?? current?.access ?? null;
  },
  refresh(): Promise<string | null> {
    refreshing ??= doRefresh().finally(() => {
      refreshing = null;
    });
    return refreshing;
  },
  async signOut(): Promise<void> {
    const token = current?.refresh;
    session.clear("signed-out");
    if (token) {
      try {
        await publicApi.POST("/auth/logout", { body: { refresh_token: token } });
      } catch {
        // offline: the refresh token still expires by itself
      }
    }
  },
};

async function doRefresh(): Promise<string | null> {
  const token = current?.refresh;
  if (!token) return null;
  let result;
  try {
    result = await publicApi.POST("/auth/refresh", { body: { refresh_token: token } });
  } catch {
    return null; // network: keep the tokens, the next call tries again
  }
  if (result.data) {
    save(result.data);
    emit("refreshed");
    return result.data.access_token;
  }
  if (result.response.status === 401 || result.response.status === 400 || result.response.status === 403) {
    session.clear("expired");
  }
  return null;
}
