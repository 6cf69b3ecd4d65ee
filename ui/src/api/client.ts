/** The typed client, generated from proto/openapi.json at build time (`npm run gen`), so a call that does not
 * match the API does not compile. Every request carries the access token; a 401 rotates the refresh token once
 * and retries. */
import createClient from "openapi-fetch";
import { ApiError } from "./errors";
import type { paths } from "./generated/schema";
import { session } from "./session";

async function authFetch(request: Request): Promise<Response> {
  const retry = request.clone(); // a body can be sent once
  const token = await session.freshAccessToken();
  if (token) request.headers.set("Authorization", `Bearer ${token}`);
  let response: Response;
  try {
    response = await fetch(request);
  } catch (e) {
    throw ApiError.network(e);
  }
  if (response.status !== 401 || !session.hasTokens()) return response;
  const rotated = await session.refresh();
  if (!rotated) return response;
  retry.headers.set("Authorization", `Bearer ${rotated}`);
  try {
    return await fetch(retry);
  } catch (e) {
    throw ApiError.network(e);
  }
}

export const api = createClient<paths>({ baseUrl: "", fetch: authFetch });

interface Result<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** Unwraps an openapi-fetch result: the data, or an ApiError with the gateway's status, code and field. */
export async function call<T>(pending: Promise<Result<T>>): Promise<T> {
  let result: Result<T>;
  try {
    result = await pending;
  } catch (e) {
    throw e instanceof ApiError ? e : ApiError.network(e);
  }
  if (!result.response.ok) throw ApiError.fromBody(result.response.status, result.error, result.response);
  return result.data as T;
}

/** For what the typed client does not cover: bytes (artifacts, exports), SSE, and routes that a newer gateway
 * documents (see capabilities.hasRoute) so they are not in this build's types. */
export async function rawFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await authFetch(new Request(path, init));
  if (!response.ok) throw await ApiError.fromResponse(response);
  return response;
}

export async function rawJson<T>(path: string, method = "GET", body?: unknown): Promise<T | null> {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const response = await rawFetch(path, init);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? (JSON.parse(text) as T) : null;
}

/** Saves the bytes behind an authenticated URL as a file (a plain link cannot carry the bearer token). */
export async function downloadFile(path: string, filename: string): Promise<void> {
  const response = await rawFetch(path);
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
