"""Signed tokens for the web page: one-time sign-in links and session cookies.

A token is `<payload>.<signature>`, both base64url; the payload is JSON with the kind
("link" or "session"), the person's Telegram id, an expiry (Unix seconds), for a session the
person's role, and for a link a random id recorded in the database when used
(storage.web.use_signin) so it works once. The person is looked up in the config at every
request and the session's role must still be theirs: a person removed from the config, or
whose role changed, loses access at their next request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

LINK_SECONDS = 300
LINK = "link"
SESSION = "session"


@dataclass(frozen=True)
class Claims:
    kind: str
    person_id: int
    expires: int
    token_id: str = ""
    role: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks tokens with one key (HMAC-SHA256)."""

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(b"fleetbridge-web:" + key.encode("utf-8")).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(
        self,
        kind: str,
        person_id: int,
        seconds: int,
        *,
        role: str = "",
        now: float | None = None,
    ) -> str:
        claims: dict[str, object] = {
            "k": kind,
            "p": person_id,
            "e": int((now if now is not None else time.time()) + seconds),
        }
        if kind == LINK:
            claims["j"] = secrets.token_urlsafe(16)
        if role:
            claims["r"] = role
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{payload}.{self._sign(payload)}"

    def check(self, token: str, kind: str, *, now: float | None = None) -> Claims | None:
        """The claims of a token of `kind` signed with this key and not expired, else None."""
        if len(token) > 1024 or token.count(".") != 1:
            return None
        payload, signature = token.split(".")
        try:
            expected = self._sign(payload)
        except UnicodeEncodeError:
            return None
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):
            return None
        if not isinstance(data, dict) or data.get("k") != kind:
            return None
        person, expires = data.get("p"), data.get("e")
        token_id, role = data.get("j", ""), data.get("r", "")
        if not isinstance(person, int) or not isinstance(expires, int):
            return None
        if not isinstance(token_id, str) or not isinstance(role, str):
            return None
        if expires < (now if now is not None else time.time()):
            return None
        return Claims(kind, person, expires, token_id, role)
