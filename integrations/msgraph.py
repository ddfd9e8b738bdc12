"""Microsoft 365 mailboxes through msal (client-credentials flow) and Microsoft Graph REST.

msal is synchronous, so token calls run in a worker thread. It gets an explicit
`requests.Session` whose `verify` is passed on every request: with a session-level `verify`
only, a set REQUESTS_CA_BUNDLE would silently replace it. `instance_discovery=False` lets the
authority be any https:// server (tests, sovereign clouds). The token cache is a file only the
owner can read (0600); msal answers from it and fetches a new token shortly before expiry.

Graph calls honour 429/503 `Retry-After`, page through `@odata.nextLink` (only on the
configured Graph host: the bearer token never goes elsewhere) and `$select` only what triage
needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import requests

from integrations.mailbox import (
    AccountUnknown,
    AuthFailed,
    BackendNotFound,
    BadOutput,
    Envelope,
    MailboxError,
    MailboxTimeout,
)

SCOPES = ["https://graph.microsoft.com/.default"]
SELECT = "id,internetMessageId,subject,from,receivedDateTime,importance,isRead"
MAX_PAGES = 20
MAX_RETRIES = 3
REFRESH_MARGIN = 300.0  # seconds before expiry at which a token is renewed
# How far before the newest message seen each pass looks again. Mail can be delivered late
# with an older receivedDateTime (a delayed relay, a moved message); messages listed twice are
# judged once anyway (the triage item's Message-ID), so the overlap costs only the listing.
LOOKBACK = timedelta(days=1)
_TEXT_BODY = 'outlook.body-content-type="text"'
_AUTH_ERRORS = ("invalid_client", "unauthorized_client", "invalid_grant", "access_denied")


class _PinnedSession(requests.Session):
    """Passes its own `verify` on every request, so REQUESTS_CA_BUNDLE cannot override it."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", self.verify)
        return super().request(*args, **kwargs)


class GraphMailbox:
    def __init__(
        self,
        *,
        user: str,
        folder: str,
        tenant: str,
        client_id: str,
        client_secret: str,
        authority: str,
        base_url: str,
        token_cache: Path,
        ca_bundle: Path | None = None,
        timeout: float = 60.0,
        page_size: int = 500,
    ) -> None:
        self.user = user
        self.folder = "inbox" if folder.upper() == "INBOX" else folder
        self.tenant = tenant
        self.client_id = client_id
        self._secret = client_secret
        self.authority = f"{authority.rstrip('/')}/{tenant}"
        self.base_url = base_url.rstrip("/")
        self.token_cache = token_cache
        self.ca_bundle = ca_bundle
        self.timeout = timeout
        self.page_size = page_size
        self._app: Any = None
        self._cache: Any = None
        self._token: str | None = None
        self._expires_at = 0.0
        self._http: aiohttp.ClientSession | None = None
        self.token_requests = 0  # tokens fetched from the authority (not the cache)

    # -- tokens ---------------------------------------------------------------------------

    def _application(self) -> Any:
        import msal

        if self._app is None:
            self._cache = msal.SerializableTokenCache()
            if self.token_cache.exists():
                self._cache.deserialize(self.token_cache.read_text(encoding="utf-8"))
            session = _PinnedSession()
            session.verify = str(self.ca_bundle) if self.ca_bundle else True
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._secret,
                    authority=self.authority,
                    http_client=session,
                    instance_discovery=False,
                    token_cache=self._cache,
                    timeout=self.timeout,
                )
            except ValueError as err:
                # msal raises ValueError when the authority's metadata cannot be fetched.
                raise _authority_error(self.authority, err) from None
            except requests.RequestException as err:
                raise MailboxError(
                    f"cannot reach the authority {self.authority}: {type(err).__name__}"
                ) from None
        return self._app

    def _acquire(self) -> dict[str, Any]:
        app = self._application()
        try:
            result: dict[str, Any] = app.acquire_token_for_client(scopes=SCOPES)
        except ValueError as err:  # authority metadata unusable (msal may fetch it lazily)
            raise _authority_error(self.authority, err) from None
        except requests.RequestException as err:
            raise MailboxError(
                f"cannot reach the authority {self.authority}: {type(err).__name__}"
            ) from None
        if self._cache.has_state_changed:
            self._save_cache(self._cache.serialize())
        return result

    def _save_cache(self, data: str) -> None:
        self.token_cache.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.token_cache, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(data)
        os.chmod(self.token_cache, 0o600)  # an older file may have had wider permissions

    async def token(self) -> str:
        """A valid access token, renewed `REFRESH_MARGIN` seconds before it expires."""
        if self._token is not None and time.time() < self._expires_at - REFRESH_MARGIN:
            return self._token
        result = await asyncio.to_thread(self._acquire)
        if "access_token" not in result:
            code = str(result.get("error", "unknown_error"))
            text = str(result.get("error_description", "")).splitlines()[0][:200]
            if code in _AUTH_ERRORS:
                raise AuthFailed(
                    f"Microsoft identity platform refused client {self.client_id} ({code}): "
                    f"{text} (check graph.client_id and graph.client_secret)"
                )
            if code == "invalid_request" and "tenant" in text.lower():
                raise AccountUnknown(f"tenant {self.tenant!r} is unknown: {text}")
            raise MailboxError(f"no token from {self.authority} ({code}): {text}")
        if result.get("token_source") == "identity_provider":
            self.token_requests += 1
        self._token = str(result["access_token"])
        self._expires_at = time.time() + float(result.get("expires_in", 3600))
        return self._token

    # -- Graph REST -----------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            ssl_context: ssl.SSLContext | bool = True
            if self.ca_bundle is not None:
                ssl_context = ssl.create_default_context(cafile=str(self.ca_bundle))
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(ssl=ssl_context),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _url(self, *parts: str) -> str:
        path = "/".join(quote(p, safe="") for p in parts)
        return f"{self.base_url}/users/{quote(self.user, safe='')}/{path}"

    async def _call(
        self, method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        renewed = False
        for attempt in range(MAX_RETRIES + 1):
            token = await self.token()
            sent = {"Authorization": f"Bearer {token}", **(headers or {})}
            try:
                async with self._session().request(
                    method, url, json=body, headers=sent
                ) as response:
                    status = response.status
                    text = await response.text()
                    retry_after = response.headers.get("Retry-After", "")
            except TimeoutError:
                raise MailboxTimeout(
                    f"Microsoft Graph gave no answer in {self.timeout:.0f} s ({method})"
                ) from None
            except aiohttp.ClientError as err:
                raise MailboxError(
                    f"cannot reach Microsoft Graph at {self.base_url}: {type(err).__name__}"
                ) from None
            if status in (429, 503) and attempt < MAX_RETRIES:
                wait = _seconds(retry_after)
                if wait > self.timeout:
                    raise MailboxError(
                        f"Microsoft Graph asks to wait {wait:.0f} s ({status}); next pass"
                    )
                await asyncio.sleep(wait)
                continue
            if status == 401 and not renewed:
                self._token = None  # revoked or expired early: fetch a new one once
                renewed = True
                continue
            return _answer(status, text, self.user)
        raise MailboxError(f"Microsoft Graph still busy after {MAX_RETRIES} retries")

    async def list_new(self, cursor: str | None) -> tuple[list[Envelope], str | None]:
        query_filter = "isRead eq false"
        if cursor:
            query_filter += f" and receivedDateTime ge {_looking_back(cursor)}"
        params = {"$filter": query_filter, "$select": SELECT, "$top": str(self.page_size)}
        url: str | None = (
            self._url("mailFolders", self.folder, "messages") + "?" + urlencode(params)
        )
        headers = {"Prefer": _TEXT_BODY}
        envelopes: list[Envelope] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            page = await self._call("GET", url, headers=headers)
            if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                raise BadOutput(f"Graph message list without value: {json.dumps(page)[:200]!r}")
            envelopes += [_envelope(item) for item in page["value"]]
            link = page.get("@odata.nextLink")
            if link is not None and not str(link).startswith(self.base_url + "/"):
                raise BadOutput(f"Graph nextLink leaves {self.base_url}: {str(link)[:200]!r}")
            url = str(link) if link else None
        envelopes = [e for e in envelopes if not e.seen]
        envelopes.sort(key=lambda e: e.extra.get("received", ""))
        received = [e.extra["received"] for e in envelopes if e.extra.get("received")]
        return envelopes, (max(received) if received else cursor)

    async def read(self, backend_id: str) -> str:
        url = self._url("messages", backend_id) + "?" + urlencode({"$select": "body"})
        found = await self._call(
            "GET", url, headers={"Prefer": 'outlook.body-content-type="text"'}
        )
        body = found.get("body") if isinstance(found, dict) else None
        if not isinstance(body, dict):
            raise BadOutput(f"Graph message without body: {json.dumps(found)[:200]!r}")
        return str(body.get("content") or "")

    async def mark_read(self, backend_id: str) -> None:
        await self._call("PATCH", self._url("messages", backend_id), body={"isRead": True})

    async def move(self, backend_id: str, folder: str) -> None:
        await self._call(
            "POST", self._url("messages", backend_id, "move"), body={"destinationId": folder}
        )


def _looking_back(cursor: str) -> str:
    """The cursor (an RFC 3339 receivedDateTime) moved back by LOOKBACK; an unreadable one is
    used as it is."""
    try:
        moment = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    except ValueError:
        return cursor
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - LOOKBACK).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _authority_error(authority: str, err: Exception) -> MailboxError:
    text = str(err).splitlines()[0][:200]
    if "tenant" in text.lower():
        return AccountUnknown(f"the authority {authority} does not know the tenant: {text}")
    return BackendNotFound(f"no usable authority at {authority}: {text}")


def _seconds(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _answer(status: int, text: str, user: str) -> Any:
    if status == 404:
        raise AccountUnknown(f"Microsoft Graph has no mailbox or message for {user!r} (404)")
    if status in (401, 403):
        raise AuthFailed(
            f"Microsoft Graph refused access to {user!r} ({status}); the app needs the "
            "Mail.ReadWrite application permission with admin consent"
        )
    if status >= 400:
        raise MailboxError(f"Microsoft Graph answered {status}: {text[:200]}")
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise BadOutput(
            f"Microsoft Graph answered something that is not JSON: {text[:200]!r}"
        ) from None


def _envelope(item: Any) -> Envelope:
    if not isinstance(item, dict) or not item.get("id"):
        raise BadOutput(f"Graph message without an id: {json.dumps(item)[:200]!r}")
    address = (item.get("from") or {}).get("emailAddress") or {}
    received = str(item.get("receivedDateTime") or "")
    try:
        date = datetime.fromisoformat(received.replace("Z", "+00:00")) if received else None
    except ValueError:
        date = None
    message_id = str(item.get("internetMessageId") or "").strip().strip("<>")
    return Envelope(
        backend_id=str(item["id"]),
        message_id=message_id or f"graph:{item['id']}",
        sender_addr=str(address.get("address") or ""),
        sender_name=str(address.get("name") or ""),
        subject=str(item.get("subject") or ""),
        date=date,
        importance=str(item.get("importance") or "normal").lower(),
        seen=bool(item.get("isRead")),
        extra={"received": received},
    )
