"""A scriptable fake of the Anthropic Messages API for tests.

The server is an ``aiohttp.web`` application that runs inside the test's event loop and binds
``127.0.0.1`` on a free port, so the real ``anthropic.AsyncAnthropic`` client can talk to it::

    async with AnthropicServer() as server:
        server.script(text("hello"), error(429, retry_after=2), api_key="sk-a")
        client = AsyncAnthropic(base_url=server.base_url, api_key="sk-a", max_retries=0)

Routes: ``POST /v1/messages`` (non-streaming only) and ``POST /v1/messages/count_tokens``.
Anything else answers an API-shaped 404.

Auth comes first: a request without ``x-api-key`` / ``Authorization: Bearer`` (or, when
``valid_keys`` is set, with any other key) gets a 401 ``authentication_error``; a request
without an ``anthropic-version`` header gets a 400 (the SDK always sends both).

Requests are validated the way the real API does it where that is cheap (required fields,
role alternation, ``tool_result`` ids, tool definitions...). A request that fails validation
gets a 400 ``invalid_request_error`` and does not consume a scripted reply.

Replies are served from FIFO queues. ``script(..., model=..., api_key=...)`` fills a queue
that only serves matching requests; for each request the queues are tried most specific
first: (model, api_key), (None, api_key), (model, None), then the default queue (None, None).
An exhausted queue falls through to the next one. When nothing matches, ``server.default`` is
answered (it is never consumed) or, if that is ``None``, a loud 500 ``api_error``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = [
    "AnthropicServer",
    "Reply",
    "Request",
    "error",
    "estimate_tokens",
    "text",
    "tool_use",
]

DEFAULT_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

DEFAULT_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

# Content block types the fake accepts in request messages.
_USER_BLOCK_TYPES = frozenset(
    {"text", "image", "document", "tool_result", "search_result", "container_upload"}
)
_ASSISTANT_BLOCK_TYPES = frozenset(
    {
        "text",
        "tool_use",
        "thinking",
        "redacted_thinking",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
    }
)
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


def estimate_tokens(value: Any) -> int:
    """Rough token count: ``len(text) // 4`` (strings as-is, anything else as compact JSON)."""
    s = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return max(1, len(s) // 4)


# --------------------------------------------------------------------------- scripting


@dataclass
class Reply:
    """One scripted answer: a successful message (``status == 200``) or an API error."""

    # a successful message...
    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None  # default: "tool_use" if any tool_use block else "end_turn"
    usage: dict[str, int] | None = None  # missing keys are filled with computed defaults
    model: str | None = None  # default: echo the request's model
    # ...or an error
    status: int = 200
    error_type: str | None = None  # default per status, see DEFAULT_ERROR_TYPES
    error_message: str | None = None
    retry_after: float | None = None  # sets the ``retry-after`` header (seconds)
    delay: float = 0.0  # seconds to wait before answering
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers

    @property
    def is_error(self) -> bool:
        return self.status != 200


def text(s: str, **kw: Any) -> Reply:
    """A reply with a single text block."""
    return Reply(content=[{"type": "text", "text": s}], **kw)


def tool_use(
    name: str,
    input: dict[str, Any],
    *,
    id: str | None = None,
    text: str | None = None,
    **kw: Any,
) -> Reply:
    """A reply asking for one tool call (optionally preceded by a text block).

    The tool_use id is generated now when not given, so a test can read it back from
    ``reply.content[-1]["id"]``.
    """
    blocks: list[dict[str, Any]] = []
    if text is not None:
        blocks.append({"type": "text", "text": text})
    blocks.append(
        {"type": "tool_use", "id": id or _new_id("toolu_"), "name": name, "input": input}
    )
    return Reply(content=blocks, **kw)


def error(
    status: int,
    *,
    retry_after: float | None = None,
    message: str | None = None,
    error_type: str | None = None,
    delay: float = 0.0,
) -> Reply:
    """An error reply; the error type defaults from the status (429 -> rate_limit_error...)."""
    if status == 200:
        raise ValueError("error() needs a non-200 status")
    return Reply(
        status=status,
        retry_after=retry_after,
        error_message=message,
        error_type=error_type,
        delay=delay,
    )


@dataclass
class Request:
    """One request received on ``POST /v1/messages``."""

    api_key: str | None  # from x-api-key, else from "Authorization: Bearer ..."
    model: str  # "" when the body had no (string) model
    body: dict[str, Any]  # the parsed JSON body ({} when it was not a JSON object)
    headers: dict[str, str]  # header names lower-cased
    at: float  # time.monotonic() on arrival
    path: str = "/v1/messages"
    status: int = 0  # the status the fake answered with (filled in before answering)


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- validation


def _validate_system(system: Any) -> None:
    if isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _BadRequest("system: Input should be a valid string or a list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _BadRequest(f"system.{i}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            raise _BadRequest(f"system.{i}.text: Field required")
        _validate_cache_control(block, f"system.{i}")


def _validate_cache_control(block: dict[str, Any], where: str) -> None:
    cc = block.get("cache_control")
    if cc is None:
        return
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral":
        raise _BadRequest(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = cc.get("ttl")
    if ttl is not None and ttl not in ("5m", "1h"):
        raise _BadRequest(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")


def _validate_tools(tools: Any) -> set[str]:
    if not isinstance(tools, list):
        raise _BadRequest("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _BadRequest(f"tools.{i}: Input should be a valid dictionary")
        name = tool.get("name")
        if not isinstance(name, str):
            raise _BadRequest(f"tools.{i}.name: Field required")
        if not _TOOL_NAME_RE.match(name):
            raise _BadRequest(
                f"tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        if name in names:
            raise _BadRequest("tools: Tool names must be unique.")
        names.add(name)
        tool_type = tool.get("type")
        if tool_type in (None, "custom"):  # server tools ("web_search_2025...") have no schema
            schema = tool.get("input_schema")
            if not isinstance(schema, dict):
                raise _BadRequest(f"tools.{i}.custom.input_schema: Field required")
            if schema.get("type") != "object":
                raise _BadRequest(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        _validate_cache_control(tool, f"tools.{i}")
    return names


def _validate_messages(messages: Any) -> None:
    if messages is None:
        raise _BadRequest("messages: Field required")
    if not isinstance(messages, list):
        raise _BadRequest("messages: Input should be a valid list")
    if not messages:
        raise _BadRequest("messages: at least one message is required")

    prev_tool_use_ids: set[str] = set()
    prev_role: str | None = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _BadRequest(f"messages.{i}: Input should be a valid dictionary")
        role = msg.get("role")
        if role not in ("user", "assistant"):
            raise _BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _BadRequest('messages: first message must use the "user" role')
        if role == prev_role:
            raise _BadRequest(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        if "content" not in msg:
            raise _BadRequest(f"messages.{i}.content: Field required")
        content = msg["content"]
        tool_use_ids: set[str] = set()
        tool_result_ids: list[str] = []
        if isinstance(content, str):
            if role == "user" and not content:
                raise _BadRequest(f"messages.{i}: user messages must have non-empty content")
        elif isinstance(content, list):
            if role == "user" and not content:
                raise _BadRequest(f"messages.{i}: user messages must have non-empty content")
            allowed = _USER_BLOCK_TYPES if role == "user" else _ASSISTANT_BLOCK_TYPES
            for j, block in enumerate(content):
                where = f"messages.{i}.content.{j}"
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise _BadRequest(f"{where}.type: Field required")
                btype = block["type"]
                if btype not in allowed:
                    raise _BadRequest(
                        f"{where}.type: '{btype}' blocks are not allowed in {role} messages"
                    )
                _validate_cache_control(block, where)
                if btype == "text":
                    if not isinstance(block.get("text"), str):
                        raise _BadRequest(f"{where}.text.text: Field required")
                    if not block["text"]:
                        raise _BadRequest(f"{where}: text content blocks must be non-empty")
                elif btype == "tool_use":
                    for key, typ in (("id", str), ("name", str), ("input", dict)):
                        if not isinstance(block.get(key), typ):
                            raise _BadRequest(f"{where}.tool_use.{key}: Field required")
                    if block["id"] in tool_use_ids:
                        raise _BadRequest(
                            f"messages.{i}.content: `tool_use` ids must be unique: {block['id']}"
                        )
                    tool_use_ids.add(block["id"])
                elif btype == "tool_result":
                    if not isinstance(block.get("tool_use_id"), str):
                        raise _BadRequest(f"{where}.tool_result.tool_use_id: Field required")
                    result_content = block.get("content")
                    if result_content is not None and not isinstance(result_content, str | list):
                        raise _BadRequest(
                            f"{where}.tool_result.content: Input should be a valid string "
                            "or a list of content blocks"
                        )
                    tool_result_ids.append(block["tool_use_id"])
        else:
            raise _BadRequest(
                f"messages.{i}.content: Input should be a valid string or a list of content blocks"
            )

        if role == "user":
            unexpected = [t for t in tool_result_ids if t not in prev_tool_use_ids]
            if unexpected:
                raise _BadRequest(
                    f"messages.{i}.content.0: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {', '.join(unexpected)}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
            missing = sorted(prev_tool_use_ids - set(tool_result_ids))
            if missing:
                raise _BadRequest(
                    f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message."
                )
        prev_tool_use_ids = tool_use_ids
        prev_role = role


def _validate_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _BadRequest("model: Field required")
    if not isinstance(model, str) or not model:
        raise _BadRequest("model: Input should be a valid string")


def _validate_common(body: dict[str, Any]) -> None:
    """Checks shared by /v1/messages and /v1/messages/count_tokens."""
    _validate_model(body)
    _validate_messages(body.get("messages"))
    if body.get("system") is not None:
        _validate_system(body["system"])
    tool_names: set[str] = set()
    if body.get("tools") is not None:
        tool_names = _validate_tools(body["tools"])
    choice = body.get("tool_choice")
    if choice is not None:
        if not isinstance(choice, dict) or choice.get("type") not in (
            "auto",
            "any",
            "tool",
            "none",
        ):
            raise _BadRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
        if choice["type"] == "tool" and choice.get("name") not in tool_names:
            raise _BadRequest(
                f"tool_choice: Tool '{choice.get('name')}' not found in provided tools"
            )


def _validate_messages_request(body: dict[str, Any]) -> None:
    if body.get("stream"):
        raise _BadRequest("stream: streaming is not supported by the fake Anthropic server")
    _validate_model(body)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _BadRequest("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise _BadRequest("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _BadRequest("max_tokens: Input should be greater than or equal to 1")
    _validate_common(body)
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not 0 <= temperature <= 1
    ):
        raise _BadRequest("temperature: Input should be less than or equal to 1")


def _input_tokens(body: dict[str, Any]) -> int:
    """~ len(json) // 4 over messages, plus system and tools when present."""
    return sum(
        estimate_tokens(body[k])
        for k in ("messages", "system", "tools")
        if body.get(k) is not None
    )


def _output_tokens(content: list[dict[str, Any]]) -> int:
    chunks: list[str] = []
    for block in content:
        if block.get("type") == "text":
            chunks.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            chunks.append(block.get("name", "") + json.dumps(block.get("input", {})))
        else:
            chunks.append(json.dumps(block))
    return max(1, len("".join(chunks)) // 4)


# --------------------------------------------------------------------------- server


_QueueKey = tuple[str | None, str | None]  # (model, api_key)


class AnthropicServer:
    """A scriptable fake Anthropic API; see the module docstring."""

    def __init__(
        self,
        *,
        default: Reply | None = None,
        valid_keys: set[str] | None = None,
    ) -> None:
        self.default: Reply | None = default
        self.valid_keys: set[str] | None = valid_keys
        self.requests: list[Request] = []  # every POST /v1/messages, including rejected ones
        self.count_tokens_requests: list[Request] = []
        self.unscripted: list[Request] = []  # requests answered with the "no scripted reply" 500
        self._queues: dict[_QueueKey, deque[Reply]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("AnthropicServer is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("AnthropicServer already started")
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self._handle_count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = site.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> AnthropicServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- scripting

    def script(
        self, *replies: Reply, model: str | None = None, api_key: str | None = None
    ) -> None:
        """Queue replies; with ``model``/``api_key`` they only serve matching requests."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply objects, got {reply!r}")
        self._queues.setdefault((model, api_key), deque()).extend(replies)

    def pending(self, *, model: str | None = None, api_key: str | None = None) -> int:
        """Number of scripted replies not yet served (all queues when no filter is given)."""
        if model is None and api_key is None:
            return sum(len(q) for q in self._queues.values())
        return len(self._queues.get((model, api_key), ()))

    def requests_for(
        self, *, model: str | None = None, api_key: str | None = None
    ) -> list[Request]:
        return [
            r
            for r in self.requests
            if (model is None or r.model == model) and (api_key is None or r.api_key == api_key)
        ]

    def reset(self) -> None:
        """Forget scripted replies and recorded requests (``default``/``valid_keys`` are kept)."""
        self._queues.clear()
        self.requests.clear()
        self.count_tokens_requests.clear()
        self.unscripted.clear()

    def _next_reply(self, model: str, api_key: str | None) -> Reply | None:
        for key in ((model, api_key), (None, api_key), (model, None), (None, None)):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        return None

    # -- HTTP

    async def _read(
        self, request: web.Request, path: str
    ) -> tuple[Request, dict[str, Any] | None]:
        raw = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        api_key = headers.get("x-api-key")
        if api_key is None:
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                api_key = auth[7:].strip()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        body: dict[str, Any] | None = parsed if isinstance(parsed, dict) else None
        model = body.get("model") if body is not None else None
        rec = Request(
            api_key=api_key,
            model=model if isinstance(model, str) else "",
            body=body if body is not None else {},
            headers=headers,
            at=time.monotonic(),
            path=path,
        )
        return rec, body

    def _precheck(self, rec: Request, body: dict[str, Any] | None) -> web.Response | None:
        """Auth and body checks the real API does before anything else."""
        if rec.api_key is None:
            return _error_response(
                rec, 401, "authentication_error", "x-api-key header is required"
            )
        if self.valid_keys is not None and rec.api_key not in self.valid_keys:
            return _error_response(rec, 401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in rec.headers:
            return _error_response(
                rec, 400, "invalid_request_error", "anthropic-version: header is required"
            )
        if body is None:
            return _error_response(
                rec,
                400,
                "invalid_request_error",
                "There was an issue with your request body: expected a JSON object",
            )
        return None

    async def _handle_messages(self, request: web.Request) -> web.Response:
        rec, body = await self._read(request, "/v1/messages")
        self.requests.append(rec)
        early = self._precheck(rec, body)
        if early is not None:
            return early
        assert body is not None
        try:
            _validate_messages_request(body)
        except _BadRequest as exc:
            return _error_response(rec, 400, "invalid_request_error", exc.message)

        reply = self._next_reply(rec.model, rec.api_key)
        if reply is None:
            reply = self.default
        if reply is None:
            self.unscripted.append(rec)
            return _error_response(
                rec,
                500,
                "api_error",
                f"no scripted reply for model {rec.model} key {rec.api_key}",
            )
        if reply.delay > 0:
            await asyncio.sleep(reply.delay)
        if reply.is_error:
            etype = reply.error_type or DEFAULT_ERROR_TYPES.get(reply.status, "api_error")
            return _error_response(
                rec,
                reply.status,
                etype,
                reply.error_message or DEFAULT_ERROR_MESSAGES.get(etype, "Error"),
                retry_after=reply.retry_after,
                extra_headers=reply.headers,
            )
        return _message_response(rec, body, reply)

    async def _handle_count_tokens(self, request: web.Request) -> web.Response:
        rec, body = await self._read(request, "/v1/messages/count_tokens")
        self.count_tokens_requests.append(rec)
        early = self._precheck(rec, body)
        if early is not None:
            return early
        assert body is not None
        try:
            _validate_common(body)
        except _BadRequest as exc:
            return _error_response(rec, 400, "invalid_request_error", exc.message)
        rec.status = 200
        return web.json_response(
            {"input_tokens": _input_tokens(body)}, headers={"request-id": _new_id("req_")}
        )

    async def _handle_not_found(self, request: web.Request) -> web.Response:
        rec, _ = await self._read(request, request.path)
        return _error_response(
            rec, 404, "not_found_error", f"Not found: {request.method} {request.path}"
        )


def _error_response(
    rec: Request,
    status: int,
    error_type: str,
    message: str,
    *,
    retry_after: float | None = None,
    extra_headers: dict[str, str] | None = None,
) -> web.Response:
    rec.status = status
    headers = {"request-id": _new_id("req_"), **(extra_headers or {})}
    if retry_after is not None:
        headers["retry-after"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        )
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}},
        status=status,
        headers=headers,
    )


def _message_response(rec: Request, body: dict[str, Any], reply: Reply) -> web.Response:
    content = copy.deepcopy(reply.content)
    stop_reason = reply.stop_reason or (
        "tool_use" if any(b.get("type") == "tool_use" for b in content) else "end_turn"
    )
    usage = {
        "input_tokens": _input_tokens(body),
        "output_tokens": _output_tokens(content),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    usage.update(reply.usage or {})
    payload = {
        "id": _new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": reply.model or rec.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    rec.status = 200
    return web.json_response(payload, headers={"request-id": _new_id("req_"), **reply.headers})
