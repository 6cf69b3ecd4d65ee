/** Every non-2xx answer of the gateway is `{"error": {status, code, message, field, detail}}`; this turns it
 * (or a network failure) into an Error the screens can show in plain words. */
import type { ErrorBody } from "./types";

export interface FieldIssue {
  path: string;
  message: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | null;
  readonly issues: FieldIssue[];
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, field: string | null = null, issues: FieldIssue[] = [], retryAfter: number | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.issues = issues;
    this.retryAfter = retryAfter;
  }

  static fromBody(status: number, body: unknown, response?: Response): ApiError {
    const err = (body && typeof body === "object" && "error" in body ? (body as { error: unknown }).error : null) as Partial<ErrorBody> | null;
    const retry = response?.headers.get("Retry-After");
    const retryAfter = retry && /^\d+$/.test(retry) ? Number(retry) : null;
    if (!err || typeof err !== "object") {
      return new ApiError(status, "http_" + status, response?.statusText || `HTTP ${status}`, null, [], retryAfter);
    }
    const issues: FieldIssue[] = [];
    for (const d of err.detail ?? []) {
      const loc = Array.isArray(d.loc) ? (d.loc as unknown[]).map(String) : [];
      if (loc[0] === "body") loc.shift(); // FastAPI's marker for "the JSON body"
      issues.push({ path: loc.join("."), message: String(d.msg ?? "invalid") });
    }
    const field = err.field ?? null;
    if (field && !issues.some((i) => i.path === field)) {
      issues.unshift({ path: field, message: stripField(err.message ?? "invalid", field) });
    }
    return new ApiError(err.status ?? status, err.code ?? "error", err.message ?? "error", field, issues, retryAfter);
  }

  static async fromResponse(response: Response): Promise<ApiError> {
    let body: unknown = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    return ApiError.fromBody(response.status, body, response);
  }

  static network(cause: unknown): ApiError {
    const e = new ApiError(0, "network", "cannot reach the gateway");
    (e as { cause?: unknown }).cause = cause;
    return e;
  }
}

/** "steps.0.url: Field required" -> "Field required" when shown next to that field. */
function stripField(message: string, field: string): string {
  return message.startsWith(field + ": ") ? message.slice(field.length + 2) : message;
}

/** The sentence a person reads. 422s are better shown at their field (see fieldError). */
export function plainMessage(error: unknown): string {
  if (error instanceof ApiError) {
    switch (error.status) {
      case 0:
        return "Cannot reach the gateway. Check your connection and try again.";
      case 401:
        return "Your session has ended. Please sign in again.";
      case 403:
        return "Not allowed: your role or key does not permit this." + (error.message && error.message !== "forbidden" ? ` (${error.message})` : "");
      case 404:
        return "Not found: it may have been deleted, or it belongs to another organization.";
      case 409:
        return `Conflict: ${error.message}`;
      case 413:
        return "Too large: the request is bigger than the gateway accepts.";
      case 422:
        return `Invalid input: ${error.message}`;
      case 429:
        return `Too many requests. Try again${error.retryAfter ? ` in ${error.retryAfter} s` : " in a moment"}.`;
      case 503:
        return "A service is unavailable right now. Try again shortly.";
      default:
        if (error.status >= 500) return `The server failed (${error.status}): ${error.message}`;
        return error.message;
    }
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

/** The message for a form field: an issue whose path is the field or lies inside it (`allowed_domains.2`). */
export function fieldError(error: unknown, name: string): string | undefined {
  if (!(error instanceof ApiError) || error.status !== 422) return undefined;
  const hit = error.issues.find((i) => i.path === name || i.path.startsWith(name + "."));
  if (!hit) return undefined;
  if (hit.path === name) return hit.message;
  const rest = hit.path.slice(name.length + 1);
  const [first, ...more] = rest.split(".");
  // a list field (`allowed_domains.2`): say which entry, counting from 1 as people do
  const where = /^\d+$/.test(first ?? "") ? [`entry ${Number(first) + 1}`, ...more].join(".") : rest;
  return `${where}: ${hit.message}`;
}

/** True when the error is not a 422 that one of `fields` shows by itself. */
export function needsGeneralNote(error: unknown, fields: readonly string[]): boolean {
  if (!error) return false;
  if (!(error instanceof ApiError) || error.status !== 422) return true;
  // "" stands for an editor of the whole body, which shows every issue itself
  return !error.issues.some((i) => fields.some((f) => f === "" || i.path === f || i.path.startsWith(f + ".")));
}
