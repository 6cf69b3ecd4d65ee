/** What the signed-in person may do, so a control that would be refused is never shown.
 *
 * Roles mirror the gateway's access rules (services/gateway: `access(min_role, scope=...)`): viewers read,
 * users also submit and cancel tasks and store credentials, admins do everything in their organization, and
 * the platform operator also manages organizations. A control whose route a newer gateway adds (worker drain
 * and revoke, delivery replay, event-stream tickets) shows only when this build's proto/openapi.json lists it. */
import { ROUTES } from "./generated/routes";
import type { Role } from "./types";

const RANK: Record<Role, number> = { viewer: 0, user: 1, admin: 2 };

export const atLeast = (role: Role, min: Role): boolean => RANK[role] >= RANK[min];

/** `hasRoute("POST", "/admin/workers/{id}/drain")`: parameter names do not matter. */
export function hasRoute(method: string, path: string): boolean {
  return ROUTES.has(`${method.toUpperCase()} ${path.replace(/\{[^}]*\}/g, "{}")}`);
}

/** The first of several candidate paths that the API documents (names of not-yet-built routes vary). */
export function findRoute(method: string, candidates: readonly string[]): string | null {
  return candidates.find((p) => hasRoute(method, p)) ?? null;
}

export interface Caps {
  role: Role;
  operator: boolean;
  tasksWrite: boolean;
  schedulesWrite: boolean;
  credentialsWrite: boolean;
  profilesDelete: boolean;
  workers: boolean;
  workerDrain: string | null;
  workerRevoke: string | null;
  webhooks: boolean;
  deliveryReplay: string | null;
  webhookEventTypes: string | null;
  users: boolean;
  apiKeys: boolean;
  audit: boolean;
  policyWrite: boolean;
  eventsTicket: string | null;
}

export function capabilities(role: Role, operator: boolean): Caps {
  const admin = atLeast(role, "admin");
  const user = atLeast(role, "user");
  return {
    role,
    operator: operator && admin,
    tasksWrite: user,
    schedulesWrite: admin,
    credentialsWrite: user,
    profilesDelete: admin,
    workers: admin,
    workerDrain: admin ? findRoute("POST", ["/admin/workers/{id}/drain"]) : null,
    workerRevoke: admin ? findRoute("DELETE", ["/admin/workers/{id}"]) : null,
    webhooks: admin,
    deliveryReplay: admin
      ? findRoute("POST", [
          "/admin/webhooks/deliveries/{id}/replay",
          "/admin/webhooks/deliveries/{id}/retry",
          "/api/v1/webhooks/deliveries/{id}/replay",
        ])
      : null,
    webhookEventTypes: findRoute("GET", ["/api/v1/webhooks/event-types"]),
    users: admin,
    apiKeys: admin,
    audit: admin,
    policyWrite: admin,
    eventsTicket: findRoute("POST", ["/api/v1/events/ticket"]),
  };
}

/** Fills a path template: fillPath("/admin/workers/{id}/drain", "w1"). */
export function fillPath(template: string, ...values: string[]): string {
  let i = 0;
  return template.replace(/\{[^}]*\}/g, () => encodeURIComponent(values[i++] ?? ""));
}
