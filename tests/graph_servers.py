"""Local stand-ins for the Microsoft identity platform (HTTPS, a throwaway trustme CA, as msal
insists on https://) and Microsoft Graph's mail endpoints (plain HTTP), for tests."""

from __future__ import annotations

import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web

TENANT = "contoso-tenant"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_SECRET = "graph-secret-Zq8~not-a-real-one"


class TokenServer:
    """`/{tenant}/v2.0/.well-known/openid-configuration` and the token endpoint
    (client-credentials grant). `expires_in` is what each issued token lives."""

    def __init__(self, ca: trustme.CA, *, expires_in: int = 3600) -> None:
        self.ca = ca
        self.expires_in = expires_in
        self.token_requests: list[dict[str, str]] = []
        self.issued: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TokenServer:
        app = web.Application()
        app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", self._openid)
        app.router.add_post("/{tenant}/oauth2/v2.0/token", self._token)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _openid(self, request: web.Request) -> web.Response:
        tenant = request.match_info["tenant"]
        if tenant != TENANT:
            return web.json_response(
                {
                    "error": "invalid_tenant",
                    "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                },
                status=400,
            )
        base = f"{self.authority}/{tenant}"
        return web.json_response(
            {
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "issuer": f"{base}/v2.0",
            }
        )

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(form)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided.",
                },
                status=401,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"token-{len(self.issued) + 1}-{time.monotonic_ns()}"
        self.issued.append(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.expires_in, "access_token": token}
        )


@dataclass
class GraphRequest:
    method: str
    path: str
    query: dict[str, str]
    token: str
    body: Any = None


@dataclass
class GraphServer:
    """Users' mail folders: GET messages (`$filter` on isRead, `$select`, `$top`, paging by
    `$skiptoken` in `@odata.nextLink`), GET one message, PATCH isRead, POST move. Answers
    `busy` queued statuses (429/503 with Retry-After) first."""

    tokens: TokenServer
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user -> mail
    busy: list[tuple[int, str]] = field(default_factory=list)
    requests: list[GraphRequest] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1.0"

    async def __aenter__(self) -> GraphServer:
        app = web.Application()
        app.router.add_route("*", "/v1.0/users/{user}/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        body = await request.json() if request.can_read_body else None
        record = GraphRequest(
            request.method,
            request.path,
            dict(request.query),
            auth.removeprefix("Bearer "),
            body,
        )
        self.requests.append(record)
        if record.token not in self.tokens.issued:
            return web.json_response({"error": {"code": "InvalidAuthenticationToken"}}, status=401)
        if self.busy:
            status, retry_after = self.busy.pop(0)
            return web.json_response(
                {"error": {"code": "TooManyRequests"}},
                status=status,
                headers={"Retry-After": retry_after},
            )
        user = request.match_info["user"]
        mail = self.messages.get(user)
        if mail is None:
            return web.json_response({"error": {"code": "ErrorInvalidUser"}}, status=404)
        parts = request.match_info["tail"].split("/")
        if parts == ["mailFolders", "inbox", "messages"] and request.method == "GET":
            return self._list(request, user, mail)
        if parts[0] == "messages" and len(parts) >= 2:
            found = next((m for m in mail if m["id"] == parts[1]), None)
            if found is None:
                return web.json_response({"error": {"code": "ErrorItemNotFound"}}, status=404)
            if request.method == "GET":
                return web.json_response({"id": found["id"], "body": found["body"]})
            if request.method == "PATCH":
                found.update(body or {})
                return web.json_response(found)
            if request.method == "POST" and parts[2:] == ["move"]:
                mail.remove(found)
                return web.json_response(found, status=201)
        return web.json_response({"error": {"code": "BadRequest"}}, status=400)

    def _list(self, request: web.Request, user: str, mail: list[dict[str, Any]]) -> web.Response:
        query = request.query
        if "isRead eq false" not in query.get("$filter", ""):
            return web.json_response({"error": {"code": "BadRequest"}}, status=400)
        unread = [m for m in mail if not m["isRead"]]
        since = re.search(r"receivedDateTime ge (\S+)", query.get("$filter", ""))
        if since is not None:  # RFC 3339 in UTC with Z: the strings compare like the times
            unread = [m for m in unread if m["receivedDateTime"] >= since.group(1)]
        top = int(query.get("$top", "10"))
        skip = int(query.get("$skiptoken", "0"))
        page = unread[skip : skip + top]
        fields = query.get("$select", "").split(",")
        value = [{k: v for k, v in m.items() if k in fields} for m in page]
        answer: dict[str, Any] = {"value": value}
        if skip + top < len(unread):
            answer["@odata.nextLink"] = (
                f"{self.base_url}/users/{user}/mailFolders/inbox/messages"
                f"?$top={top}&$skiptoken={skip + top}&$select={query.get('$select', '')}"
                f"&$filter={query.get('$filter', '')}"
            )
        return web.json_response(answer)


def graph_message(n: int, *, read: bool = False, importance: str = "normal") -> dict[str, Any]:
    return {
        "id": f"AAMkAD{n}==",
        "internetMessageId": f"<g{n}@contoso.example>",
        "subject": f"Graph message {n}",
        "from": {"emailAddress": {"name": f"Sender {n}", "address": f"s{n}@contoso.example"}},
        "receivedDateTime": f"2026-11-25T08:00:{n:02d}Z",
        "importance": importance,
        "isRead": read,
        "body": {"contentType": "text", "content": f"Body of {n}"},
        "internalSecret": "not selected",
    }


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path
