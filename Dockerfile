# syntax=docker/dockerfile:1.7
# Every browserfleet image, built from the repository root (one uv workspace, one lock). SERVICE names the
# workspace member (services/<SERVICE>); the target picks what its image adds:
#   docker build --target service --build-arg SERVICE=auth -t browserfleet/auth .
#       (likewise scheduler, vault, webhooks, worker-gateway)
#   docker build --target gateway --build-arg SERVICE=gateway -t browserfleet/gateway .   (serves the dashboard)
#   docker build --target worker --build-arg SERVICE=worker -t browserfleet/worker .      (brings Chromium)
# Each image runs `browserfleet-<SERVICE> run` unless told otherwise; the manifests name the command
# (`migrate`, `bootstrap`, `run`) themselves. docker-compose.yml builds them all: `docker compose build`.
ARG SERVICE

FROM ghcr.io/astral-sh/uv:python3.11-bookworm-slim AS build
ARG SERVICE
RUN test -n "$SERVICE" || (echo "--build-arg SERVICE=<auth|gateway|scheduler|vault|webhooks|worker-gateway|worker> is required" >&2; exit 1)
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
WORKDIR /app
# Third-party dependencies first, so a code-only change reuses this layer. uv resolves the whole workspace
# from the lock, so every member's pyproject must be present; --no-dev keeps the dev tooling out.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    --mount=type=bind,source=libs,target=libs \
    --mount=type=bind,source=services,target=services \
    --mount=type=bind,source=tools,target=tools \
    uv sync --frozen --no-dev --package "browserfleet-$SERVICE" --no-install-workspace
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY tools ./tools
# --no-editable: the runtime stage gets installed packages (migrations included), not links into /app.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "browserfleet-$SERVICE" --no-editable

FROM python:3.11-slim-bookworm AS base
ARG SERVICE
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    BROWSERFLEET_COMMAND=browserfleet-$SERVICE
EXPOSE 9100
CMD ["sh", "-c", "exec \"$BROWSERFLEET_COMMAND\" run"]

# auth, scheduler, vault, webhooks, worker-gateway. Run `browserfleet-<SERVICE> migrate` once per release (a Job
# or a one-shot service) before `run`. webhooks calls customers' URLs: give it egress, and keep
# WEBHOOK_ALLOW_PRIVATE_TARGETS unset (false) in production.
FROM base AS service
RUN groupadd --system --gid 10001 browserfleet \
    && useradd --system --uid 10001 --gid browserfleet --no-create-home --shell /usr/sbin/nologin browserfleet
USER 10001:10001

# The dashboard (ui/ -> dist/), from the committed npm lock; its API client is generated from proto/openapi.json.
FROM node:22-bookworm-slim AS ui
WORKDIR /src/ui
COPY ui/package.json ui/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY proto /src/proto
COPY ui/index.html ui/vite.config.ts ui/tsconfig.json ./
COPY ui/tools ./tools
COPY ui/src ./src
RUN npm run build

FROM service AS gateway
COPY --from=ui /src/ui/dist /app/ui/dist
ENV DASHBOARD_DIR=/app/ui/dist \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/live', timeout=2)"]

# Playwright's own Chromium (matched to the driver) and its system libraries, in a shared path the non-root
# user can read; the worker finds it through Playwright, no BROWSER_EXECUTABLE needed. Run with a larger
# /dev/shm than Docker's 64 MB default (Chromium renders through it): docker run --shm-size=1g ...
FROM base AS worker
ENV PLAYWRIGHT_BROWSERS_PATH=/ms-playwright \
    WORKER_STATE_DIR=/var/lib/browserfleet-worker
RUN playwright install --with-deps chromium \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 browserfleet \
    && useradd --system --uid 10001 --gid browserfleet --create-home --shell /usr/sbin/nologin browserfleet \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/browserfleet-worker
# Non-root keeps Chromium's sandbox on (the worker adds --no-sandbox only as root). The sandbox needs user
# namespaces: run with Playwright's seccomp profile, or set BROWSER_SANDBOX=false where that is impossible.
USER 10001:10001
VOLUME ["/var/lib/browserfleet-worker"]
