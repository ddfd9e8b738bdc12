"""Sign-in and sessions: the session cookie, the middleware that lets a request through only
with a session (or, for /metrics and /healthz, from `[web] metrics_from`), the one-time link's
sign-in page and sign-out, and the signer of the tokens."""

from __future__ import annotations

import ipaddress
import logging

from aiohttp import web

from bot.config import Config, Person
from bot.web.auth import LINK, SESSION, Signer
from bot.web.context import CONFIG, DB, PERSON, SIGNER, Handler
from bot.web.pages import _page
from storage import web as web_store
from storage.db import Database

log = logging.getLogger(__name__)

COOKIE = "fleet_session"
PUBLIC = ("/signin", "/static/", "/healthz", "/metrics", "/hooks/")


def _person(request: web.Request) -> Person | None:
    """The signed-in person, looked up in the config at every request."""
    token = request.cookies.get(COOKIE, "")
    claims = request.app[SIGNER].check(token, SESSION) if token else None
    if claims is None:
        return None
    person = request.app[CONFIG].person(claims.person_id)
    if person is None or person.role != claims.role:
        return None
    return person


def _from_metrics_network(request: web.Request, config: Config) -> bool:
    try:
        address = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(net, strict=False) for net in config.web.metrics_from
    )


@web.middleware
async def require_session(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith(PUBLIC) and path not in ("/metrics", "/healthz"):
        return await handler(request)
    person = _person(request)
    if path in ("/metrics", "/healthz"):
        if person is None and not _from_metrics_network(request, request.app[CONFIG]):
            raise web.HTTPForbidden(text="metrics and health are served to metrics_from only")
        return await handler(request)
    if person is None:
        response = _page("signed_out.html", None, request, status=401, title="Sign in", active="")
        if COOKIE in request.cookies:
            response.del_cookie(COOKIE, path="/")
        return response
    request[PERSON] = person
    return await handler(request)


async def signin_form(request: web.Request) -> web.Response:
    token = request.query.get("t", "")
    valid = request.app[SIGNER].check(token, LINK) is not None
    return _page(
        "signin.html", None, request, title="Sign in", active="", token=token, valid=valid
    )


async def signin(request: web.Request) -> web.Response:
    form = await request.post()
    token = str(form.get("t", ""))
    config = request.app[CONFIG]
    claims = request.app[SIGNER].check(token, LINK)
    person = config.person(claims.person_id) if claims is not None else None
    if claims is None or person is None:
        return _refused(request, "This sign-in link is not valid or has expired.")
    async with request.app[DB].session() as session:
        fresh = await web_store.use_signin(session, claims.token_id, claims.person_id)
    if not fresh:
        return _refused(request, "This sign-in link was used already; each link works once.")
    hours = config.web.session_hours
    cookie = request.app[SIGNER].issue(SESSION, person.telegram_id, hours * 3600, role=person.role)
    response = web.HTTPSeeOther("/")
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=hours * 3600,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=config.web.base_url().startswith("https://"),
    )
    log.info("web: %s signed in", person.name)
    raise response


def _refused(request: web.Request, why: str) -> web.Response:
    return _page("signed_out.html", None, request, status=403, title="Sign in", active="", why=why)


async def signout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/signin")
    response.del_cookie(COOKIE, path="/")
    raise response


async def signer_for(config: Config, db: Database) -> Signer:
    """The signer of `[web] secret`, else of the key generated once in the database."""
    if config.web.secret is not None:
        return Signer(config.web.secret.get_secret_value())
    async with db.session() as session:
        return Signer(await web_store.signing_key(session))
