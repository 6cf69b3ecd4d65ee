import type { ReactNode } from "react";
import { Navigate, NavLink, Route, Routes, useLocation } from "react-router";
import { API_VERSION } from "./api/generated/routes";
import type { Caps } from "./api/capabilities";
import { useAuth, useSignedIn } from "./auth";
import { ErrorBoundary } from "./components/ErrorBoundary";
import { Forbidden, Loading } from "./components/ui";
import { useStreamState } from "./lib/hooks";
import { ApiKeysPage } from "./pages/ApiKeys";
import { AuditPage } from "./pages/Audit";
import { CredentialsPage } from "./pages/Credentials";
import { LoginPage } from "./pages/Login";
import { OrganizationsPage } from "./pages/Organizations";
import { PolicyPage } from "./pages/Policy";
import { SchedulesPage } from "./pages/Schedules";
import { TaskDetailPage } from "./pages/TaskDetail";
import { TaskNewPage } from "./pages/TaskNew";
import { TasksPage } from "./pages/Tasks";
import { UsersPage } from "./pages/Users";
import { WebhooksPage } from "./pages/Webhooks";
import { WorkersPage } from "./pages/Workers";

export function App() {
  const { status, signedOutByUser } = useAuth();
  const location = useLocation();
  if (status === "loading") return <Loading what="Signing in" />;
  if (status === "signed-out") {
    // after an expiry, signing in again returns to the page that was open; after "Sign out" the next person
    // starts on their own default page
    const from = signedOutByUser ? undefined : location.pathname + location.search;
    if (location.pathname !== "/login") return <Navigate to="/login" replace state={{ from }} />;
    return <LoginPage />;
  }
  if (location.pathname === "/login") {
    const from = (location.state as { from?: string } | null)?.from;
    return <Navigate to={from && from !== "/login" ? from : "/tasks"} replace />;
  }
  return <Shell />;
}

interface Area {
  path: string;
  page: ReactNode;
  /** in the sidebar, under this name */
  label?: string;
  /** what the page is for, when the role may not use it (its route then says "Not allowed") */
  gate?: [allowed: boolean, what: string];
}

function areas(caps: Caps): Area[] {
  return [
    { path: "/tasks", label: "Tasks", page: <TasksPage /> },
    { path: "/tasks/new", page: <TaskNewPage />, gate: [caps.tasksWrite, "submitting tasks"] },
    { path: "/tasks/:taskId", page: <TaskDetailPage /> },
    { path: "/schedules", label: "Schedules", page: <SchedulesPage /> },
    { path: "/workers", label: "Workers", page: <WorkersPage />, gate: [caps.workers, "managing workers"] },
    { path: "/credentials", label: "Credentials", page: <CredentialsPage /> },
    { path: "/webhooks", label: "Webhooks", page: <WebhooksPage />, gate: [caps.webhooks, "managing webhooks"] },
    { path: "/users", label: "Users", page: <UsersPage />, gate: [caps.users, "managing users"] },
    { path: "/api-keys", label: "API keys", page: <ApiKeysPage />, gate: [caps.apiKeys, "managing API keys"] },
    { path: "/audit", label: "Audit log", page: <AuditPage />, gate: [caps.audit, "reading the audit log"] },
    { path: "/policy", label: "Policy", page: <PolicyPage /> },
    {
      path: "/organizations",
      label: "Organizations",
      page: <OrganizationsPage />,
      gate: [caps.operator, "managing organizations (platform operator only)"],
    },
  ];
}

function Shell() {
  const { caps } = useSignedIn();
  const location = useLocation();
  const all = areas(caps);
  return (
    <div className="shell">
      <nav className="sidebar" aria-label="Main" data-testid="nav">
        <div className="brand">browserfleet</div>
        {all
          .filter((a) => a.label && (a.gate?.[0] ?? true))
          .map((a) => (
            <NavLink key={a.path} to={a.path} data-testid={`nav-${a.path.slice(1)}`}>
              {a.label}
            </NavLink>
          ))}
        <a href="/docs" target="_blank" rel="noreferrer" data-testid="api-docs-link" className="docs-link">
          API docs ↗
        </a>
        <div className="version muted small">API {API_VERSION}</div>
      </nav>
      <div className="main">
        <TopBar />
        <ErrorBoundary key={location.pathname} where="this page">
          <Routes>
            <Route path="/" element={<Navigate to="/tasks" replace />} />
            {all.map(({ path, page, gate }) => (
              <Route key={path} path={path} element={!gate || gate[0] ? page : <Forbidden what={gate[1]} />} />
            ))}
            <Route path="*" element={<NotFound />} />
          </Routes>
        </ErrorBoundary>
      </div>
    </div>
  );
}

function TopBar() {
  const { me, signOut } = useAuth();
  const stream = useStreamState();
  if (!me) return null;
  const streamText: Record<string, string> = {
    live: "Live updates",
    connecting: "Connecting…",
    unavailable: "Polling (live stream unavailable)",
    off: "Polling",
  };
  return (
    <header className="topbar">
      <div>
        <strong data-testid="current-org">{me.organization.name}</strong>{" "}
        <span className="muted small">({me.organization.plan})</span>
      </div>
      <div className="row">
        <span className={`stream stream-${stream}`} data-testid="events-status" data-state={stream} title="Organization event stream">
          {streamText[stream]}
        </span>
        <span data-testid="current-user">{me.user.email}</span>
        <span className={`badge role-${me.role}`} data-testid="current-role">
          {me.role}
        </span>
        <button type="button" className="secondary" onClick={() => void signOut()} data-testid="sign-out">
          Sign out
        </button>
      </div>
    </header>
  );
}

function NotFound() {
  return (
    <div className="panel">
      <h2>Page not found</h2>
      <p>
        There is no page here. <NavLink to="/tasks">Go to tasks</NavLink>.
      </p>
    </div>
  );
}
