"""The gateway's own files: the dashboard build (served from DASHBOARD_DIR) and the API docs' assets.

No NATS is needed: these routes touch neither the broker nor a service, so the app is driven without its
lifespan. The docs rendering in a real browser with no internet is checked in tests/dashboard.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from browserfleet_gateway.app import create_app, openapi
from browserfleet_gateway.settings import GatewaySettings
from browserfleet_gateway.static import CHECKOUT_DIST

INDEX = (
    b'<!doctype html><html><head><script type="module" src="/assets/index-abc123.js"></script></head></html>'
)
SCRIPT = b"console.log('dashboard')"


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A stand-in build of ui/ (the layout `vite build` writes), plus a secret next to it."""
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "assets" / "index-abc123.js").write_bytes(SCRIPT)
    (root / "assets" / ".hidden").write_bytes(b"hidden")
    (tmp_path / "secret.txt").write_bytes(b"not for the web")
    (root / "assets" / "link-out.js").symlink_to(tmp_path / "secret.txt")
    return root


async def client_for(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@pytest.fixture
async def client(dist: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    # configured the way an operator does it: the environment
    monkeypatch.setenv("DASHBOARD_DIR", str(dist))
    async for c in client_for(GatewaySettings(nats_url="nats://unused.invalid:4222")):
        yield c


@pytest.mark.parametrize("path", ["/", "/app", "/app/tasks", "/app/tasks/0f1e2d/attempts", "/app/workers/"])
async def test_every_client_route_gets_the_index_revalidated_under_a_csp(
    client: httpx.AsyncClient, path: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 200
    assert r.content == INDEX
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    csp = r.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["script-src"] == ["'self'"]  # no inline script, no other origin
    assert directives["img-src"] == ["'self'", "blob:", "data:"]  # screenshots and live-view frames
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert r.headers["x-content-type-options"] == "nosniff"


async def test_hashed_assets_are_immutable_and_head_works(client: httpx.AsyncClient) -> None:
    r = await client.get("/assets/index-abc123.js")
    assert r.status_code == 200
    assert r.content == SCRIPT
    assert "javascript" in r.headers["content-type"]
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    head = await client.head("/assets/index-abc123.js")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(SCRIPT)


@pytest.mark.parametrize(
    "path",
    [
        "/assets/missing-000.js",
        "/assets/..%2Findex.html",
        "/assets/..%2F..%2Fsecret.txt",
        "/assets/%2E%2E",
        "/assets/.hidden",
        "/assets/link-out.js",  # a symlink that leaves the folder
        "/assets/sub%2Findex-abc123.js",
        "/assets/",
    ],
)
async def test_nothing_outside_the_assets_folder_is_served(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    assert b"not for the web" not in r.content
    assert b"hidden" not in r.content


@pytest.mark.parametrize("path", ["/api/v1/nope", "/admin/nope", "/apps", "/index.html", "/appendix"])
async def test_api_paths_are_not_swallowed_by_the_client_routes(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["status"] == 404


async def test_api_still_answers_beside_the_dashboard(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/tasks")
    # the API's own answer (here: still starting, as no lifespan runs), not the index
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["status"] == r.status_code


async def test_a_gateway_without_a_build_says_how_to_build_it(tmp_path: Path) -> None:
    settings = GatewaySettings(nats_url="nats://unused.invalid:4222", dashboard_dir=tmp_path / "nowhere")
    async for client in client_for(settings):
        r = await client.get("/app/tasks")
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("text/html")
        assert "make ui" in r.text
        assert 'href="/docs"' in r.text
        assert (await client.get("/assets/index-abc123.js")).status_code == 404
        assert (await client.get("/docs")).status_code == 200  # the docs do not need the build


def test_the_checkout_default_is_this_repositorys_ui_dist() -> None:
    assert CHECKOUT_DIST.parent == Path(__file__).resolve().parents[3] / "ui"
    assert GatewaySettings(nats_url="nats://x:4222").dashboard_dir is None


def test_none_of_it_is_in_the_openapi_document() -> None:
    paths = openapi()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/app", "/assets", "/docs", "/redoc"))]


_URLS = re.compile(r"""(?:src|href)="([^"]+)"|url: '([^']+)'""")


async def test_the_docs_page_loads_only_files_of_this_gateway(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200
    assert "//" not in r.text.replace("window.location.origin", "")  # no other origin
    urls = {u for groups in _URLS.findall(r.text) for u in groups if u}
    assert {"/openapi.json", "/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= urls
    for url in urls:
        assert url.startswith("/"), url
        got = await client.get(url)
        assert got.status_code == 200, url
        assert len(got.content) > 100, url
    css = await client.get("/docs/static/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    assert "max-age" in css.headers["cache-control"]
    # ReDoc is not offered: it would fetch its logo from its vendor's CDN
    assert (await client.get("/redoc")).status_code == 404


async def test_only_the_docs_files_are_served_from_the_docs_folder(client: httpx.AsyncClient) -> None:
    for name in ("__init__.py", "..%2Fcore.py", "swagger-ui-bundle.js.map", "LICENSE", "redoc.standalone.js"):
        r = await client.get(f"/docs/static/{name}")
        assert r.status_code == 404, name
