/** Single sign-on with the organization's identity provider (services/gateway routes/sso.py): the browser
 * goes to `GET /auth/sso/{slug}/login`, signs in at the provider and comes back to the dashboard with a
 * one-time code in the URL fragment (a fragment never reaches a server, a log or a Referer), which
 * `POST /auth/sso/exchange` turns into tokens or a second-factor challenge. */
import { ApiError } from "./errors";

let pending: string | null = null;

/** Takes the code out of the address bar before anything else reads the URL (main.tsx, at start). */
export function captureSsoCode(): boolean {
  const match = /(?:^#|&)sso_code=([^&]+)/.exec(window.location.hash);
  if (!match) return false;
  pending = decodeURIComponent(match[1]);
  window.history.replaceState(null, "", window.location.pathname + window.location.search);
  return true;
}

/** The code brought back when this page loaded (good once: the gateway refuses it a second time). */
export function ssoCodeAtLoad(): string | null {
  return pending;
}

/** Leaves for the provider. The start is asked first without following it, so that an organization without
 * single sign-on is said in words on the sign-in page rather than as a JSON error page. */
export async function startSso(slug: string): Promise<void> {
  const url = `/auth/sso/${encodeURIComponent(slug)}/login`;
  let response: Response;
  try {
    response = await fetch(url, { redirect: "manual", cache: "no-store" });
  } catch (e) {
    throw ApiError.network(e);
  }
  if (response.type !== "opaqueredirect" && !response.ok) throw await ApiError.fromResponse(response);
  window.location.assign(url);
}
