/** Opening an authenticated WebSocket the way the draft protocol (notes: ws_protocol.md) allows a browser,
 * which cannot set headers on one: a single-use ticket from `POST /api/v1/events/ticket` when this build's API
 * has that route, else the access token as the first message (`{"type": "AUTH", "token": ...}`). */
import { rawJson } from "./client";
import { session } from "./session";

export function wsUrl(path: string): string {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${window.location.host}${path}`;
}

export interface AuthedSocket {
  ws: WebSocket;
  /** true when the token goes as the first message (sent on open by openSocket). */
  firstMessageAuth: boolean;
}

async function ticket(route: string): Promise<string | null> {
  try {
    const reply = await rawJson<Record<string, unknown>>(route, "POST", {});
    const t = reply?.ticket ?? reply?.token;
    return typeof t === "string" && t ? t : null;
  } catch {
    return null;
  }
}

export async function openSocket(path: string, ticketRoute: string | null): Promise<AuthedSocket> {
  const t = ticketRoute ? await ticket(ticketRoute) : null;
  if (t) {
    const sep = path.includes("?") ? "&" : "?";
    return { ws: new WebSocket(wsUrl(`${path}${sep}ticket=${encodeURIComponent(t)}`)), firstMessageAuth: false };
  }
  const token = await session.freshAccessToken();
  const ws = new WebSocket(wsUrl(path));
  ws.addEventListener("open", () => {
    if (token) ws.send(JSON.stringify({ type: "AUTH", token }));
  });
  return { ws, firstMessageAuth: true };
}

/** Close codes of the draft protocol, in words. */
export function closeReason(code: number, reason: string): string {
  switch (code) {
    case 1000:
      return "closed";
    case 1001:
      return "the gateway is restarting";
    case 4401:
      return "sign-in expired or refused";
    case 4403:
      return "not allowed";
    case 4404:
      return "not found";
    case 4408:
      return "authentication timed out";
    case 4429:
      return "too many messages";
    case 4008:
      return "the connection was too slow and was dropped";
    default:
      return reason || `connection closed (${code})`;
  }
}
