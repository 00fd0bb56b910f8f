"""Server-rendered pages for people: templates, sessions, CSRF, language, navigation per role.

Pages are Jinja2 templates (autoescaped: text from users is always escaped) under a shared
layout (``base.html``), with htmx for partial updates and server-sent events for live values.
Every page answers with a strict Content-Security-Policy (scripts and styles from this
site only, no inline code), so injected markup could not run even if it got through.

:class:`WebUi` is what apps build on: :meth:`WebUi.viewer` (a FastAPI dependency) says who is
looking and in which language; :meth:`WebUi.render` renders a page; :meth:`WebUi.form` reads
a POSTed form and refuses it (403 and a ``csrf`` security event) unless its token is right;
:meth:`WebUi.require` sends anonymous visitors to ``/login`` and refuses other roles (403 and
an ``access_denied`` event, as the API does).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal
from urllib.parse import quote, urlsplit

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from msec import __version__
from msec.access.model import ANONYMOUS, Principal, Verb
from msec.access.principals import SqlPrincipals
from msec.access.service import AccessService
from msec.core.models import ResourceValue
from msec.guard.base import EventLog
from msec.web.bodies import BodyTooLarge, read_capped
from msec.web.i18n import LANGUAGE_NAMES, LANGUAGES, Catalogs, Translator, negotiate
from msec.web.live import LiveFeed, TooManyStreams, sse_stream
from msec.web.sessions import CsrfTokens, LoginEmails, Session, SqlSessions

__all__ = ["NavItem", "StaffRoles", "Viewer", "ViewerDep", "WebUi"]

SESSION_COOKIE: Final = "msec_session"
NONCE_COOKIE: Final = "msec_browser"
LANG_COOKIE: Final = "msec_lang"
#: How long a session's lookup is reused by the requests of one browser.
_SESSION_CACHE_S: Final = 1.0
#: Largest form a page accepts (registration, a rating with its comment).
MAX_FORM_BYTES: Final = 16 * 1024

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)

StaffRoles: Final = frozenset({"operator", "officer", "admin"})


@dataclass(frozen=True, slots=True)
class NavItem:
    """One link of the navigation bar: shown to ``roles`` (``None``: everyone; an empty set:
    only anonymous visitors)."""

    path: str
    label: str  # message id
    roles: frozenset[str] | None = None
    order: int = 100


@dataclass
class Viewer:
    """Who is looking at a page, in which language, with which form token."""

    principal: Principal
    session: Session | None
    lang: str
    t: Translator
    csrf: str
    #: Cookies the response must set (a new browser nonce, a language chosen by ``?lang``).
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return self.session is not None and self.principal.authenticated

    def has_role(self, *roles: str) -> bool:
        return self.logged_in and bool(self.principal.roles.intersection(roles))

    @property
    def name(self) -> str:
        return self.principal.id.partition(":")[2]


class WebUi:
    """The page layer of one installation; apps register templates, messages and links."""

    def __init__(
        self,
        *,
        access: AccessService,
        events: EventLog,
        principals: SqlPrincipals | None,
        sessions: SqlSessions,
        csrf: CsrfTokens,
        emails: LoginEmails,
        secure_cookies: Literal["auto", "always", "never"] = "auto",
        public_url: str = "",
    ) -> None:
        self.access = access
        self.events = events
        self.principals = principals
        self.sessions = sessions
        self.csrf = csrf
        self.emails = emails
        self.secure_cookies = secure_cookies
        self.public_url = public_url.rstrip("/")
        self.catalogs = Catalogs(["msec.web"])
        self._loaders: list[jinja2.BaseLoader] = [jinja2.PackageLoader("msec.web", "templates")]
        self.env = self._environment()
        self.nav: list[NavItem] = [
            NavItem("/login", "nav.login", frozenset(), order=900),
        ]
        #: Where each role lands after login (the first match in this order wins).
        self.home: dict[str, str] = {}
        #: The sign-up page an app offers (linked from the login page), if any.
        self.register_path = ""
        self._sessions_seen: dict[str, tuple[float, Session | None, Principal]] = {}

    def _environment(self) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(self._loaders),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,  # templates ship in the package: no stat() per page
        )
        env.globals.update(version=__version__, languages=LANGUAGES, language_names=LANGUAGE_NAMES)
        env.filters["localtime"] = _localtime
        return env

    def add_app(self, package: str) -> None:
        """Serve ``<package>/templates`` and translate with ``<package>/locales``."""
        self._loaders.insert(0, jinja2.PackageLoader(package, "templates"))
        self.env = self._environment()
        self.catalogs.add_package(package)

    # -- who is looking ------------------------------------------------------------------------

    def viewer(self, request: Request) -> Viewer:
        """The visitor of this request: their session's principal, or anonymous."""
        session, principal = self._session_of(request.cookies.get(SESSION_COOKIE))
        cookies: dict[str, str] = {}
        query_lang = request.query_params.get("lang")
        lang = negotiate(
            query_lang, request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")
        )
        if query_lang in LANGUAGES and request.cookies.get(LANG_COOKIE) != query_lang:
            cookies[LANG_COOKIE] = lang
        if session is not None:
            binding = session.key
        else:
            nonce = request.cookies.get(NONCE_COOKIE, "")
            if not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum()):
                nonce = secrets.token_urlsafe(24)
                cookies[NONCE_COOKIE] = nonce
            binding = "anon:" + nonce
        request.state.principal = principal
        return Viewer(
            principal, session, lang, self.catalogs.translator(lang), self.csrf.token(binding),
            cookies,
        )  # fmt: skip


    def _session_of(self, token: str | None) -> tuple[Session | None, Principal]:
        """The session of cookie ``token`` and its principal, looked up at most once a
        second per session (a session ended or an account disabled in this process takes
        effect at once, see :meth:`forget`; from another process, within a second)."""
        if not token:
            return None, ANONYMOUS
        now = time.monotonic()
        cached = self._sessions_seen.get(token)
        if cached is not None and now - cached[0] < _SESSION_CACHE_S:
            return cached[1], cached[2]
        session = self.sessions.get(token)
        principal: Principal = ANONYMOUS
        if session is not None and self.principals is not None:
            found = self.principals.principal(session.principal_id)
            if found is None:  # disabled or deleted since login
                self.sessions.delete_for(session.principal_id)
                session = None
            else:
                principal = found
        elif session is not None:
            session = None
        if len(self._sessions_seen) > 10_000:
            self._sessions_seen.clear()
        self._sessions_seen[token] = (now, session, principal)
        return session, principal

    def forget(self, principal_id: str | None = None) -> None:
        """Drop cached sessions (of ``principal_id``, or all): the next request reads them."""
        if principal_id is None:
            self._sessions_seen.clear()
            return
        for token, (_, session, _) in list(self._sessions_seen.items()):
            if session is not None and session.principal_id == principal_id:
                self._sessions_seen.pop(token, None)

    def require(self, request: Request, viewer: Viewer, roles: Iterable[str]) -> None:
        """Anonymous: redirect to the login page (and back here afterwards). Logged in without
        one of ``roles``: 403, recorded like any refused access."""
        wanted = frozenset(roles)
        if not viewer.logged_in:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(303, headers={"Location": f"/login?next={quote(target)}"})
        if not viewer.principal.roles.intersection(wanted):
            source = request.client.host if request.client else ""
            self.access.refuse(
                viewer.principal, Verb.GET, f"page:{request.url.path}",
                f"page needs one of the roles {sorted(wanted)}", source=source,
            )  # fmt: skip
            raise HTTPException(403, viewer.t("error.forbidden"))

    # -- forms -----------------------------------------------------------------------------------

    async def form(self, request: Request, viewer: Viewer) -> FormData:
        """The POSTed form, once its CSRF token and origin are checked (else 403/413/415)."""
        source = request.client.host if request.client else ""
        if not self._same_origin(request):
            self.events.warn("csrf", f"cross-origin POST {request.url.path}", source=source)
            raise HTTPException(403, viewer.t("error.csrf"))
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            self.events.warn("malformed", f"form with Content-Type {kind[:60]!r}", source=source)
            raise HTTPException(415, "a form is application/x-www-form-urlencoded")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_FORM_BYTES:
            self.events.warn("oversized", f"form of {length} bytes", source=source)
            raise HTTPException(413, viewer.t("error.too_large"))
        try:
            body = await read_capped(request, MAX_FORM_BYTES)
        except BodyTooLarge:
            self.events.warn("oversized", f"form over {MAX_FORM_BYTES} bytes", source=source)
            raise HTTPException(413, viewer.t("error.too_large")) from None

        request._body = body  # Starlette parses what was already read (Request.body caches it)
        try:
            form = await request.form(max_files=0, max_fields=50)
        except Exception as exc:  # malformed bodies are the client's error, never a 500
            self.events.warn("malformed", f"unreadable form: {type(exc).__name__}", source=source)
            raise HTTPException(400, "malformed form") from None
        token = form.get("csrf") or request.headers.get("x-csrf-token")
        binding = viewer.session.key if viewer.session else ""
        if not binding:
            nonce = request.cookies.get(NONCE_COOKIE, "")
            binding = "anon:" + nonce if nonce else ""
        if not self.csrf.check(binding, token):
            self.events.warn("csrf", f"POST {request.url.path} without a valid token",
                             source=source)  # fmt: skip
            raise HTTPException(403, viewer.t("error.csrf"))
        return form

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """A browser's POST names its page's origin; another site's must not be accepted."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            return origin is None  # "null": sandboxed or privacy-stripped: refuse
        parts = urlsplit(origin)
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        return parts.netloc == host

    # -- sessions --------------------------------------------------------------------------------

    def start_session(self, request: Request, response: Response, principal_id: str) -> None:
        token, _ = self.sessions.create(principal_id)
        response.set_cookie(
            SESSION_COOKIE, token, max_age=int(self.sessions.max_s), httponly=True,
            samesite="lax", secure=self._secure(request), path="/",
        )  # fmt: skip

    def end_session(self, request: Request, response: Response) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.sessions.delete(token)
            self._sessions_seen.pop(token, None)
        response.delete_cookie(SESSION_COOKIE, path="/")

    def _secure(self, request: Request) -> bool:
        if self.secure_cookies != "auto":
            return self.secure_cookies == "always"
        proto = request.headers.get("x-forwarded-proto", request.url.scheme)
        return proto.split(",")[0].strip() == "https"

    def live(
        self,
        request: Request,
        viewer: Viewer,
        feed: LiveFeed,
        render: Callable[[list[ResourceValue]], Awaitable[list[str]]],
    ) -> Response:
        """A page's server-sent-event stream of ``render(changes)``; 429 (and a
        ``rate_limited`` security event) past the feed's caps on open streams."""
        source = request.client.host if request.client else ""
        try:
            sub = feed.subscribe(source)
        except TooManyStreams as exc:
            self.events.warn("rate_limited", f"{request.url.path}: {exc}", source=source)
            raise HTTPException(429, str(exc), headers={"Retry-After": "30"}) from None
        stream = sse_stream(feed, render, is_disconnected=request.is_disconnected, sub=sub)
        response = StreamingResponse(stream, media_type="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
        return self.finish(request, viewer, response)

    def landing(self, viewer: Viewer) -> str:
        """Where ``viewer`` goes after login."""
        for role, path in self.home.items():
            if role in viewer.principal.roles:
                return path
        return "/"

    def site_url(self, request: Request) -> str:
        """The public address of the site (``[http] public_url`` or this request's)."""
        return self.public_url or str(request.base_url).rstrip("/")

    # -- rendering -------------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        viewer: Viewer,
        template: str,
        *,
        status: int = 200,
        title: str = "",
        **context: Any,
    ) -> HTMLResponse:
        context.setdefault("register_path", self.register_path)
        page = self.env.get_template(template).render(
            request=request, viewer=viewer, t=viewer.t, lang=viewer.lang, title=title,
            nav=self._nav(viewer, request.url.path), path=request.url.path, **context,
        )  # fmt: skip
        response = HTMLResponse(page, status_code=status)
        self.finish(request, viewer, response)
        return response

    def fragment(self, template: str, viewer: Viewer, **context: Any) -> str:
        """A template rendered alone (partial updates and server-sent events)."""
        return self.env.get_template(template).render(
            viewer=viewer, t=viewer.t, lang=viewer.lang, **context
        )

    def finish(self, request: Request, viewer: Viewer, response: Response) -> Response:
        """Security headers and the cookies the viewer needs on any page response."""
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Cache-Control"] = "no-store"
        secure = self._secure(request)
        for name, value in viewer.cookies.items():
            response.set_cookie(
                name, value, max_age=365 * 86400, httponly=True, samesite="lax", secure=secure,
                path="/",
            )  # fmt: skip
        return response

    def redirect(self, request: Request, viewer: Viewer, path: str) -> Response:
        return self.finish(request, viewer, RedirectResponse(path, status_code=303))

    def _nav(self, viewer: Viewer, path: str) -> list[dict[str, Any]]:
        items = []
        for item in sorted(self.nav, key=lambda i: i.order):
            if item.roles is None:
                shown = True
            elif not item.roles:
                shown = not viewer.logged_in
            else:
                shown = viewer.has_role(*item.roles)
            if shown:
                current = path == item.path or (
                    item.path != "/" and path.startswith(item.path + "/")
                )
                items.append({"path": item.path, "label": viewer.t(item.label), "current": current})
        return items


def current_viewer(request: Request) -> Viewer:
    """The FastAPI dependency behind :data:`ViewerDep` (the app's ``state.ui``)."""
    ui: WebUi = request.app.state.ui
    return ui.viewer(request)


#: Route parameter type: who is looking at the page.
ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def _localtime(epoch: float | None, fmt: str = "%H:%M") -> str:
    """An epoch time as the server's local time (the park's); an em dash for none."""
    if epoch is None:
        return "\u2014"
    return time.strftime(fmt, time.localtime(epoch))


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path on this site (never another site: no open redirect)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
        or len(target) > 500
    ):
        return default
    return target


def add_ui_routes(app: FastAPI, ui: WebUi) -> None:
    """The pages every installation has: home, login, logout, and HTML error pages."""
    app.state.ui = ui

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, viewer: ViewerDep) -> Response:
        return ui.render(request, viewer, "home.html", title=viewer.t("home.title"))

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, viewer: ViewerDep, next: str = "") -> Response:
        if viewer.logged_in:
            return ui.redirect(request, viewer, safe_next(next, ui.landing(viewer)))
        return ui.render(
            request, viewer, "login.html", title=viewer.t("login.title"),
            next=safe_next(next, ""), error="", identifier="",
        )  # fmt: skip

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request, viewer: ViewerDep) -> Response:
        form = await ui.form(request, viewer)
        source = request.client.host if request.client else ""
        identifier = str(form.get("identifier") or "")[:254]
        password = str(form.get("password") or "")[:1024]
        target = safe_next(str(form.get("next") or ""), "")

        def again(message: str, status: int) -> Response:
            return ui.render(
                request, viewer, "login.html", status=status, title=viewer.t("login.title"),
                next=target, error=message, identifier=identifier,
            )  # fmt: skip

        wait = ui.access.throttle(ANONYMOUS, source)
        if wait:
            ui.events.warn("rate_limited", "POST /login", source=source)
            return again(viewer.t("login.slow_down"), 429)
        name = identifier.strip().lower()
        if "@" in name:
            # The address itself is not stored; its keyed hash finds the account. An unknown
            # address still costs one password check (same answer, same time).
            name = await run_in_threadpool(ui.emails.user_of, name) or "-"
        if ui.principals is None:
            return again(viewer.t("login.failed"), 401)
        from msec.access.principals import AuthError, LockedOut

        try:
            # argon2 takes ~0.1 s of CPU: in a worker thread, not on the event loop that
            # serves every other page and live stream.
            principal = await run_in_threadpool(ui.principals.authenticate_password, name,
                                                password)  # fmt: skip
        except LockedOut:
            ui.events.warn("login_failed", "web login refused: locked", source=source)
            return again(viewer.t("login.locked"), 429)
        except AuthError as exc:
            reason = getattr(exc, "reason", "invalid")
            ui.events.warn("login_failed", f"web login refused: {reason}", source=source)
            return again(viewer.t("login.failed"), 401)
        response = RedirectResponse(
            target or ui.landing(_as_viewer(viewer, principal)), status_code=303
        )
        ui.start_session(request, response, principal.id)
        return ui.finish(request, viewer, response)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, viewer: ViewerDep) -> Response:
        await ui.form(request, viewer)
        response = RedirectResponse("/", status_code=303)
        ui.end_session(request, response)
        return ui.finish(request, viewer, response)


def _as_viewer(viewer: Viewer, principal: Principal) -> Viewer:
    return Viewer(principal, viewer.session, viewer.lang, viewer.t, viewer.csrf, viewer.cookies)


def html_error(ui: WebUi, request: Request, status: int, detail: str,
               headers: Mapping[str, str] | None = None) -> Response:  # fmt: skip
    """An error as a page of the site's layout (for browsers, not the API)."""
    if status in (301, 302, 303, 307) and headers and "Location" in headers:
        return RedirectResponse(headers["Location"], status_code=status)
    viewer = ui.viewer(request)
    titles = {403: "error.403", 404: "error.404", 429: "error.429"}
    return ui.render(
        request, viewer, "error.html", status=status,
        title=viewer.t(titles.get(status, "error.title")), detail=detail, status_code=status,
    )  # fmt: skip
