import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { BrowserRouter } from "react-router";
import { App } from "./App";
import { captureSsoCode } from "./api/sso";
import { AuthProvider } from "./auth";
import { ErrorBoundary } from "./components/ErrorBoundary";
import "./styles.css";

// Client routes live under /app/ so none can collide with an API path (`/organizations`, `/admin/...`);
// the gateway serves index.html at `/` and for every `/app/...` path.
// A finished single sign-on lands on `/#sso_code=…` (the gateway's SSO_REDIRECT_PATH); the code leaves the
// address bar at once and AuthProvider exchanges it.
if (captureSsoCode() && !window.location.pathname.startsWith("/app")) window.history.replaceState(null, "", "/app/login");
if (!window.location.pathname.startsWith("/app")) window.history.replaceState(null, "", "/app/tasks");

const root = document.getElementById("root");
if (!root) throw new Error("#root missing from index.html");
createRoot(root).render(
  <StrictMode>
    <ErrorBoundary where="the dashboard">
      <AuthProvider>
        <BrowserRouter basename="/app">
          <App />
        </BrowserRouter>
      </AuthProvider>
    </ErrorBoundary>
  </StrictMode>,
);
