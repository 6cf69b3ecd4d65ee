"""What the gateway serves besides the API: the dashboard (`ui/dist`) and the API docs' own files.

* `GET /assets/{name}`: the dashboard's build files. Their names carry a content hash, so they are cached
  for a year as `immutable`.
* `GET /`, `GET /app` and `GET /app/{path}`: the dashboard's `index.html` (revalidated on every load, so a
  new build shows at once), which routes in the browser. Every client route lives under `/app/`, so the
  fallback never shadows an API path: an unknown `/api/...` or `/admin/...` path stays a JSON 404.
* `/docs` (Swagger UI) loads its script and styles from `/docs/static/`, copies shipped in the
  fastapi-offline wheel, never from a CDN: on a closed network a CDN-backed page renders blank. There is no
  `/redoc`: even with its script served here, ReDoc fetches its sidebar logo from its vendor's CDN.

None of these routes are part of the OpenAPI document.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

from .deps import public
from .settings import GatewaySettings

log = logging.getLogger(__name__)

# services/gateway/src/browserfleet_gateway/static.py -> the checkout's root
CHECKOUT_DIST = Path(__file__).resolve().parents[4] / "ui" / "dist"

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
DOCS_CACHE = "public, max-age=86400"

# The dashboard's own needs (ui/README.md): scripts and styles are files of this origin, screenshots are
# shown from blob: URLs and live-view frames as data: URLs; the API, SSE and WebSockets are same-origin.
DASHBOARD_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

# Vite's output names (index-<hash>.js, <name>-<hash>.css): one path segment, no dot first, so neither
# `..` nor a hidden file can be asked for.
_ASSET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
DOCS_ASSETS = Path(str(resources.files("fastapi_offline") / "static"))
_DOCS_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})
DOCS_STATIC = "/docs/static"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>browserfleet</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; line-height: 1.5">
<h1>The dashboard is not built on this gateway</h1>
<p>Build it with <code>make ui</code> (or <code>bash scripts/install.sh</code>, which <code>make dev</code>
runs), or point <code>DASHBOARD_DIR</code> at a built <code>ui/dist</code>; then reload this page.</p>
<p>The API works without it: see the <a href="/docs">API docs</a>.</p>
</body></html>
"""


def dashboard_dir(settings: GatewaySettings) -> Path:
    return settings.dashboard_dir if settings.dashboard_dir is not None else CHECKOUT_DIST


def install_static(app: FastAPI, settings: GatewaySettings) -> None:
    """Adds the dashboard and the docs page to `app` (created with `docs_url=None, redoc_url=None`)."""
    dist = dashboard_dir(settings)
    if not (dist / "index.html").is_file():
        log.warning("dashboard not built: %s has no index.html (run `make ui`); / explains that", dist)
    app.include_router(_dashboard_router(dist))
    app.include_router(_docs_router(app))


def _file_in(folder: Path, name: str) -> Path | None:
    """`folder/name` if it is a regular file directly inside `folder` (a symlink out of it is refused)."""
    if not _ASSET_NAME.fullmatch(name):
        return None
    path = folder / name
    try:
        resolved = path.resolve(strict=True)
        inside = resolved.parent == folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if inside and resolved.is_file() else None


def _not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="no such file")


def _dashboard_router(dist: Path) -> APIRouter:
    # the page and its scripts carry no data: the app signs in and calls the API like any client
    router = APIRouter(
        include_in_schema=False, dependencies=[Depends(public("the dashboard's build files: no data"))]
    )

    @router.api_route("/assets/{name}", methods=["GET", "HEAD"])
    async def asset(name: str) -> Response:
        path = _file_in(dist / "assets", name)
        if path is None:
            raise _not_found()
        return FileResponse(path, headers={"Cache-Control": IMMUTABLE})

    async def index() -> Response:
        page = dist / "index.html"
        if not page.is_file():
            # a person at the printed URL gets a page saying what to do, never a bare 404 or a blank page
            return HTMLResponse(NOT_BUILT_PAGE, status_code=503, headers={"Cache-Control": "no-store"})
        return FileResponse(
            page,
            media_type="text/html; charset=utf-8",
            headers={"Cache-Control": REVALIDATE, "Content-Security-Policy": DASHBOARD_CSP},
        )

    for path in ("/", "/app", "/app/{client_route:path}"):
        router.add_api_route(path, index, methods=["GET", "HEAD"])
    return router


def _docs_router(app: FastAPI) -> APIRouter:
    router = APIRouter(
        include_in_schema=False, dependencies=[Depends(public("the API docs page, as /openapi.json is"))]
    )
    openapi_url = app.openapi_url or "/openapi.json"

    @router.get("/docs")
    async def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT,
            # the validator badge would ask validator.swagger.io about every spec
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
        )

    @router.get(OAUTH2_REDIRECT)
    async def swagger_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.api_route(DOCS_STATIC + "/{name}", methods=["GET", "HEAD"])
    async def docs_file(name: str) -> Response:
        if name not in _DOCS_FILES:
            raise _not_found()
        return FileResponse(DOCS_ASSETS / name, headers={"Cache-Control": DOCS_CACHE})

    return router
