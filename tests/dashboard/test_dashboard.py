"""The dashboard as people use it: real Chromium against the real platform (conftest.py).

An admin signs in, submits a steps task against a page on 127.0.0.1 and watches it go from running to
completed without a reload, then opens its screenshot; invites a worker and sees it come online; adds a
viewer, who sees a dashboard without a single control the API would refuse. A person signs in through their
organization's identity provider (SSO); an admin takes over a task's browser in the live view, types into its
page and presses continue at its handoff step. The API docs render with no internet. With BF_UPDATE_SCREENSHOTS=1 the main screens are written to docs/screenshots/ (the README's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import httpx
import pytest
from browserfleet_devkit.oidc_provider import OidcProvider
from browserfleet_devkit.up import banner
from playwright.sync_api import Page, WebSocketRoute, expect

from .conftest import Browsing, Running, screenshot
from .sites import FIELD, HeldSite

pytestmark = pytest.mark.e2e

# hang protection for what waits on the platform (a task to run, a worker to register), not a speed check
PLATFORM_WAIT_MS = 90_000

Browse = Callable[[], Browsing]


def steps_task(title: str, url: str) -> dict[str, object]:
    return {
        "title": title,
        "steps": [
            {"action": "navigate", "url": url, "timeout_ms": 120_000},
            {"action": "extract", "name": "status", "selector": "#status"},
            {"action": "screenshot", "name": "status-page"},
        ],
    }


def mark_document(page: Page) -> None:
    """A mark that only a reload (a new document) would remove."""
    page.evaluate("window.__bfSameDocument = true")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("window.__bfSameDocument === true"))


def visible_buttons(page: Page) -> set[str]:
    """Every visible button (and link styled as one), by test id, else by its text."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('button, a.button, input[type=submit]')]
                .filter((el) => el.offsetParent !== null)
                .map((el) => el.dataset.testid || el.textContent.trim())"""
    )
    return set(found)


def wait_loaded(page: Page, ready: str) -> None:
    page.locator(ready).first.wait_for()
    expect(page.locator(".page p.muted", has_text=re.compile("…$"))).to_have_count(0)


def test_api_docs_render_with_no_internet_and_make_dev_prints_the_dashboard(
    browse: Browse, running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    b = browse()
    b.goto("/docs")
    expect(b.page.locator("#swagger-ui .information-container .title")).to_contain_text("browserfleet")
    # the operations come from /openapi.json: the whole UI ran, not just its HTML
    expect(b.page.locator("#swagger-ui .opblock").first).to_be_visible()
    assert b.page.locator("#swagger-ui .opblock").count() > 20
    # the URL `make dev` prints is the dashboard's
    banner(running.platform, 1.0)
    printed = re.search(r"^  dashboard +(\S+)", capsys.readouterr().out, re.MULTILINE)
    assert printed, "make dev prints no dashboard URL"
    b.page.goto(printed.group(1))
    expect(b.page.get_by_test_id("login-form")).to_be_visible()
    expect(b.page).to_have_url(f"{running.url}/app/login")
    screenshot(b.page, "sign-in")
    # the dashboard links the docs, on the same origin
    assert b.page.get_by_role("link", name="API docs").get_attribute("href") == "/docs"


def test_admin_submits_a_task_and_watches_it_run_then_opens_its_screenshot(
    browse: Browse, running: Running, site: HeldSite
) -> None:
    b = browse()
    page = b.page
    b.sign_in(running.admin_email, running.admin_password)
    expect(page).to_have_url(f"{running.url}/app/tasks")
    expect(page.get_by_test_id("current-role")).to_have_text("admin")
    # the organization's event stream is open (a WebSocket to the same origin, under the page's CSP)
    expect(page.get_by_test_id("events-status")).to_have_attribute("data-state", "live")
    mark_document(page)

    page.get_by_test_id("task-new").click()
    page.get_by_test_id("task-json").fill(
        json.dumps(steps_task("Check the status page", site.held("acme")), indent=2)
    )
    screenshot(page, "new-task")
    page.get_by_test_id("task-submit").click()

    status = page.get_by_test_id("task-detail-status")
    expect(status).to_have_attribute("data-status", "running", timeout=PLATFORM_WAIT_MS)
    task_id = page.get_by_test_id("task-id").inner_text()
    assert page.url == f"{running.url}/app/tasks/{task_id}"

    # the list shows it running, then completed once the site answers: live, in the same document
    page.get_by_test_id("nav-tasks").click()
    row = page.locator(f"[data-testid=task-row][data-task-id='{task_id}']")
    expect(row).to_have_attribute("data-status", "running")
    screenshot(page, "tasks")
    site.release("acme")
    expect(row).to_have_attribute("data-status", "completed", timeout=PLATFORM_WAIT_MS)
    assert same_document(page), "the page was reloaded"

    row.get_by_test_id("task-link").click()
    expect(status).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("task-result")).to_contain_text("acme: all systems nominal")
    expect(page.get_by_test_id("task-cancel")).to_have_count(0)  # nothing to cancel once it ended

    # its screenshot, shown inline (fetched with the token, drawn from a blob: URL under the CSP) ...
    shot = page.locator("[data-testid=artifact-row][data-name$='.png'] [data-testid=artifact-image]").first
    expect(shot).to_be_visible()
    expect(shot).to_have_js_property("complete", True)
    assert shot.evaluate("img => img.naturalWidth") > 100
    assert (shot.get_attribute("src") or "").startswith("blob:")
    screenshot(page, "task-detail", full_page=True)
    # ... and downloaded as the PNG the worker took
    with page.expect_download() as download:
        shot.locator("xpath=ancestor::li").get_by_test_id("artifact-download").click()
    path = download.value.path()
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert same_document(page), "the page was reloaded"


def test_admin_invites_a_worker_and_sees_it_come_online(browse: Browse, running: Running) -> None:
    b = browse()
    page = b.page
    b.sign_in(running.admin_email, running.admin_password)
    page.get_by_test_id("nav-workers").click()
    expect(page.get_by_test_id("worker-row").first).to_be_visible()
    before = page.get_by_test_id("worker-row").count()
    mark_document(page)

    page.get_by_test_id("worker-invite").click()
    page.get_by_test_id("invite-tags").fill("dashboard")
    page.get_by_test_id("invite-create").click()
    code = page.get_by_test_id("invite-code").inner_text().strip()
    assert code

    name = running.platform.add_worker(code, "invited")  # a second real worker process, joining with it
    page.get_by_test_id("invite-code-done").click()
    expect(page.get_by_test_id("invite-code")).to_have_count(0)  # shown once
    row = page.locator("[data-testid=worker-row]", has_text=name)
    try:
        expect(row).to_have_attribute("data-state", "online", timeout=PLATFORM_WAIT_MS)
    except AssertionError as exc:  # seen once under load: did the worker start, register, or only not show?
        said = [line for line in running.lines if "invite" in line or "regist" in line or name in line]
        raise AssertionError("\n".join([str(exc), "platform:", *said[-60:]])) from exc
    expect(row).to_contain_text("dashboard")  # the invite's tag
    assert page.get_by_test_id("worker-row").count() == before + 1
    assert same_document(page), "the page was reloaded"
    screenshot(page, "workers")


# What a viewer may press: nothing that changes anything ("Apply" filters the task list).
VIEWER_BUTTONS = {"sign-out", "live-view-open", "artifact-download", "task-more", "All tasks", "Apply"}


def test_a_viewer_gets_a_read_only_dashboard(browse: Browse, running: Running, site: HeldSite) -> None:
    admin = browse()
    admin.sign_in(running.admin_email, running.admin_password)
    admin.page.get_by_test_id("nav-users").click()
    admin.page.get_by_test_id("user-new").click()
    admin.page.get_by_test_id("user-email-input").fill("vera.viewer@example.com")
    admin.page.get_by_test_id("user-role-input").select_option("viewer")
    admin.page.get_by_test_id("user-save").click()
    password = admin.page.get_by_test_id("user-invite-password").inner_text().strip()
    assert password

    # something on every page the viewer reads, so that a control on a row would show if it were offered
    admin_auth = {"Authorization": f"Bearer {running.token()}"}
    r = httpx.post(
        f"{running.url}/api/v1/credentials",
        headers=admin_auth,
        json={"name": "ACME_TOKEN", "value": "s3cr3t-acme-token"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{running.url}/admin/schedules",
        headers=admin_auth,
        json={
            "name": "Nightly status check",
            "cron": "0 3 * * *",
            "paused": True,
            "task": steps_task("Nightly status check", site.url),
        },
        timeout=30,
    )
    assert r.status_code == 201, r.text
    # and a running task the viewer can watch but not cancel
    r = httpx.post(
        f"{running.url}/api/v1/tasks",
        headers=admin_auth,
        json=steps_task("Watch the status page", site.held("viewer")),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]

    viewer = browse()
    page = viewer.page
    viewer.sign_in("vera.viewer@example.com", password)
    expect(page.get_by_test_id("current-role")).to_have_text("viewer")
    nav = page.get_by_test_id("nav").locator("a[data-testid^=nav-]")
    assert sorted(nav.evaluate_all("els => els.map((e) => e.dataset.testid)")) == [
        "nav-credentials",
        "nav-policy",
        "nav-schedules",
        "nav-tasks",
    ]

    row = page.locator(f"[data-testid=task-row][data-task-id='{task_id}']")
    expect(row).to_have_attribute("data-status", "running", timeout=PLATFORM_WAIT_MS)
    expect(page.get_by_test_id("task-table")).to_be_visible()
    seen = visible_buttons(page)
    screenshot(page, "viewer")
    row.get_by_test_id("task-link").click()
    expect(page.get_by_test_id("task-detail-status")).to_have_attribute("data-status", "running")
    expect(page.get_by_test_id("live-view-open")).to_be_visible()  # watching is reading
    seen |= visible_buttons(page)
    for area, ready in (
        ("schedules", "[data-testid=schedule-row]"),
        ("credentials", "[data-testid=credential-row][data-name=ACME_TOKEN]"),
        ("policy", "[data-testid=policy-view]"),
    ):
        page.get_by_test_id(f"nav-{area}").click()
        wait_loaded(page, ready)
        seen |= visible_buttons(page)
    assert "s3cr3t-acme-token" not in page.content()
    assert seen <= VIEWER_BUTTONS, f"a viewer is offered {sorted(seen - VIEWER_BUTTONS)}"
    assert "task-new" not in seen and "task-cancel" not in seen

    # a page the viewer may not use says so, rather than showing controls that fail
    viewer.goto("/app/workers")
    expect(page.get_by_test_id("forbidden")).to_be_visible()
    expect(page.get_by_test_id("worker-invite")).to_have_count(0)

    # and the API agrees with what the dashboard hides
    viewer_auth = {"Authorization": f"Bearer {running.token('vera.viewer@example.com', password)}"}
    refused = httpx.post(
        f"{running.url}/api/v1/tasks",
        headers=viewer_auth,
        json=steps_task("not allowed", site.url),
        timeout=30,
    )
    assert refused.status_code == 403, refused.text
    cancel = httpx.post(f"{running.url}/api/v1/tasks/{task_id}/cancel", headers=viewer_auth, timeout=30)
    assert cancel.status_code == 403, cancel.text

    site.release("viewer")
    viewer.goto(f"/app/tasks/{task_id}")
    expect(page.get_by_test_id("task-detail-status")).to_have_attribute(
        "data-status", "completed", timeout=PLATFORM_WAIT_MS
    )


def test_an_account_with_a_second_factor_signs_in_with_a_code(browse: Browse, running: Running) -> None:
    import pyotp

    email, password = "mia.mfa@example.com", "mia-long-passphrase-7Q!"
    admin_auth = {"Authorization": f"Bearer {running.token()}"}
    r = httpx.post(
        f"{running.url}/admin/users",
        headers=admin_auth,
        json={"email": email, "role": "user", "password": password},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    mia = {"Authorization": f"Bearer {running.token(email, password)}"}
    enrolment = httpx.post(f"{running.url}/auth/mfa/totp", headers=mia, timeout=30)
    assert enrolment.status_code == 200, enrolment.text
    secret, recovery = enrolment.json()["secret"], enrolment.json()["recovery_codes"]
    confirm = httpx.post(
        f"{running.url}/auth/mfa/totp/confirm",
        headers=mia,
        json={"code": pyotp.TOTP(secret).now()},
        timeout=30,
    )
    assert confirm.status_code == 200, confirm.text

    b = browse()
    page = b.page
    b.goto("/")
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    # the password alone signs nobody in
    expect(page.get_by_test_id("mfa-code")).to_be_visible()
    expect(page.get_by_test_id("nav")).to_have_count(0)
    page.get_by_test_id("mfa-code").fill("000000")
    page.get_by_test_id("mfa-submit").click()
    expect(page.get_by_test_id("mfa-error")).to_be_visible()
    expect(page.get_by_test_id("nav")).to_have_count(0)

    # a recovery code (a TOTP code would be the one just used to confirm, within the same 30 s step)
    b.goto("/")
    page.get_by_test_id("login-email").fill(email)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("mfa-code").fill(recovery[0])
    page.get_by_test_id("mfa-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(email)
    expect(page.get_by_test_id("current-role")).to_have_text("user")


def test_sign_in_with_sso_through_the_organizations_identity_provider(
    browse: Browse, running: Running
) -> None:
    operator = {"Authorization": f"Bearer {running.token()}"}
    org = httpx.post(
        f"{running.url}/organizations",
        headers=operator,
        json={"name": "Globex", "slug": "globex", "admin_email": "root@globex.example"},
        timeout=30,
    )
    assert org.status_code == 201, org.text
    admin = {"Authorization": f"Bearer {running.token('root@globex.example', org.json()['admin_password'])}"}
    with OidcProvider() as idp:
        secret = {"name": "GLOBEX_IDP", "value": idp.client_secret, "type": "sso_secret"}
        r = httpx.post(f"{running.url}/api/v1/credentials", headers=admin, json=secret, timeout=30)
        assert r.status_code == 201, r.text
        settings = {
            "issuer": idp.issuer,
            "client_id": idp.client_id,
            "client_secret_name": "GLOBEX_IDP",
            "email_domains": ["globex.example"],
            "role_claim": "groups",
            "role_mapping": {"fleet-users": "user"},
        }
        r = httpx.put(f"{running.url}/admin/sso", headers=admin, json=settings, timeout=30)
        assert r.status_code == 200, r.text
        idp.user = {
            "sub": "globex-grace",
            "email": "grace@globex.example",
            "name": "Grace",
            "groups": ["fleet-users"],
        }

        b = browse()
        page = b.page
        b.goto("/")
        page.get_by_test_id("login-sso").click()
        # an organization without single sign-on is said in words, on the sign-in page
        page.get_by_test_id("sso-slug").fill("no-such-org")
        page.get_by_test_id("sso-submit").click()
        expect(page.get_by_test_id("sso-error")).to_contain_text("single sign-on")
        expect(page.get_by_test_id("nav")).to_have_count(0)

        # to the provider and back: the one-time code in the fragment is exchanged and leaves the address bar
        page.get_by_test_id("sso-slug").fill("globex")
        page.get_by_test_id("sso-submit").click()
        expect(page.get_by_test_id("current-user")).to_have_text("grace@globex.example")
        expect(page.get_by_test_id("current-org")).to_have_text("Globex")
        expect(page.get_by_test_id("current-role")).to_have_text("user")
        expect(page).to_have_url(f"{running.url}/app/tasks")
        assert len(idp.token_requests) == 1  # one sign-in at the provider, one code redeemed


def test_an_admin_takes_over_a_task_in_the_live_view_and_continues_its_handoff(
    browse: Browse, running: Running, site: HeldSite
) -> None:
    task = {
        "title": "Fill in the sign-up form",
        "steps": [
            {"action": "navigate", "url": f"{site.url}/form"},
            {"action": "handoff", "message": "Type the name, then continue", "timeout_ms": 120_000},
            {"action": "extract", "name": "typed", "selector": "#echo"},
        ],
    }
    admin_auth = {"Authorization": f"Bearer {running.token()}"}
    r = httpx.post(f"{running.url}/api/v1/tasks", headers=admin_auth, json=task, timeout=30)
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]

    b = browse()
    page = b.page
    b.sign_in(running.admin_email, running.admin_password)
    b.goto(f"/app/tasks/{task_id}")
    expect(page.get_by_test_id("task-detail-status")).to_have_attribute(
        "data-status", "running", timeout=PLATFORM_WAIT_MS
    )
    page.get_by_test_id("live-view-open").click()
    expect(page.get_by_test_id("live-view-handoff")).to_contain_text(
        "Type the name, then continue", timeout=PLATFORM_WAIT_MS
    )
    frame = page.get_by_test_id("live-view-frame")
    expect(frame).to_have_attribute("data-page-width", re.compile(r"^\d+$"))
    expect(frame).to_be_visible()

    page.get_by_test_id("live-view-takeover").click()
    # a click on the field as the picture shows it, then keys: the worker replays both on the task's page
    width, height = (
        float(frame.get_attribute("data-page-width") or 0),
        float(frame.get_attribute("data-page-height") or 0),
    )
    box = frame.bounding_box()
    assert box and width and height
    left, top, field_width, field_height = FIELD
    frame.click(
        position={
            "x": (left + field_width / 2) * box["width"] / width,
            "y": (top + field_height / 2) * box["height"] / height,
        }
    )
    page.keyboard.type("grace hopper")
    expect(page.get_by_test_id("live-view-note")).to_have_count(0)  # no input was refused
    page.get_by_test_id("live-view-continue").click()

    try:
        # the worker's word that the wait is over (HANDOFF waiting: false, or the end of the run) takes the
        # notice away; then the last step runs and the task completes
        expect(page.get_by_test_id("live-view-handoff")).to_have_count(0, timeout=PLATFORM_WAIT_MS)
        expect(page.get_by_test_id("task-detail-status")).to_have_attribute(
            "data-status", "completed", timeout=PLATFORM_WAIT_MS
        )
    except AssertionError as exc:  # which hop lost the continue or the completion, for the next reader
        raise AssertionError(f"{exc}\n{what_happened(running, task_id, admin_auth)}") from exc
    expect(page.get_by_test_id("task-result")).to_contain_text("grace hopper")


def what_happened(running: Running, task_id: str, auth: dict[str, str]) -> str:
    """The task as the API tells it, its log, and what the platform's processes said about it and the live
    view: where a run that did not complete stopped."""
    task = httpx.get(f"{running.url}/api/v1/tasks/{task_id}", headers=auth, timeout=30)
    logs = httpx.get(f"{running.url}/admin/tasks/{task_id}/logs", headers=auth, timeout=30)
    said = [line for line in running.lines if task_id in line or "live view" in line]
    head = [f"task: {task.status_code} {task.text[:2000]}", f"log: {logs.status_code} {logs.text[:4000]}"]
    return "\n".join([*head, "platform:", *said[-80:]])


def test_a_live_view_whose_socket_is_gone_offers_no_continue(
    browse: Browse, running: Running, site: HeldSite
) -> None:
    """Continue goes over the live socket: once it closed (here cut by the test's browser, as a network or a
    gateway would), the notice and its button go too, rather than a button that sends into nothing."""
    task = {
        "title": "Wait for a person",
        "steps": [
            {"action": "navigate", "url": f"{site.url}/form"},
            {"action": "handoff", "message": "Check the form, then continue", "timeout_ms": 120_000},
        ],
    }
    admin_auth = {"Authorization": f"Bearer {running.token()}"}
    r = httpx.post(f"{running.url}/api/v1/tasks", headers=admin_auth, json=task, timeout=30)
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    try:
        b = browse()
        page = b.page
        sockets: list[WebSocketRoute] = []

        def relay(ws: WebSocketRoute) -> None:  # the page's live socket, passed through to the gateway
            ws.connect_to_server()
            sockets.append(ws)

        page.route_web_socket(re.compile(r"/api/v1/tasks/[^/]+/live"), relay)
        b.sign_in(running.admin_email, running.admin_password)
        b.goto(f"/app/tasks/{task_id}")
        expect(page.get_by_test_id("task-detail-status")).to_have_attribute(
            "data-status", "running", timeout=PLATFORM_WAIT_MS
        )
        page.get_by_test_id("live-view-open").click()
        expect(page.get_by_test_id("live-view-continue")).to_be_visible(timeout=PLATFORM_WAIT_MS)
        assert len(sockets) == 1

        sockets[0].close(code=4000, reason="cut by the test")
        expect(page.get_by_test_id("live-view-status")).to_have_attribute("data-state", "failed")
        expect(page.get_by_test_id("live-view-handoff")).to_have_count(0)
        expect(page.get_by_test_id("live-view-continue")).to_have_count(0)
    finally:  # nobody continues it: it must not hold a worker's slot for the rest of the module
        httpx.post(f"{running.url}/api/v1/tasks/{task_id}/cancel", headers=admin_auth, timeout=30)
