"""Tests for the fake Anthropic server, driven through the real ``anthropic`` SDK."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from tests.anthropic_server import AnthropicServer, Reply, error, text, tool_use

MODEL = "claude-test-1"
HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]

ClientFactory = Callable[..., anthropic.AsyncAnthropic]


@pytest.fixture
async def server() -> AsyncIterator[AnthropicServer]:
    async with AnthropicServer() as srv:
        yield srv


@pytest.fixture
async def make_client(server: AnthropicServer) -> AsyncIterator[ClientFactory]:
    clients: list[anthropic.AsyncAnthropic] = []

    def factory(**kw: Any) -> anthropic.AsyncAnthropic:
        if "auth_token" not in kw:
            kw.setdefault("api_key", "sk-test")
        # the fake speaks plain HTTP, so skip building a CA-verifying SSL context (~40 ms each)
        kw.setdefault("http_client", anthropic.DefaultAsyncHttpxClient(verify=False))
        client = anthropic.AsyncAnthropic(base_url=server.base_url, max_retries=0, **kw)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


async def test_text_round_trip_with_usage(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    usage = {
        "input_tokens": 120,
        "output_tokens": 7,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 90,
    }
    server.script(text("hi there", usage=usage))
    client = make_client(api_key="sk-a")

    msg = await client.messages.create(
        model=MODEL,
        max_tokens=64,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=HELLO,
    )

    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.id.startswith("msg_")
    assert msg.model == MODEL
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].type == "text" and msg.content[0].text == "hi there"
    assert msg.usage.input_tokens == 120
    assert msg.usage.output_tokens == 7
    assert msg.usage.cache_creation_input_tokens == 30
    assert msg.usage.cache_read_input_tokens == 90
    assert msg._request_id is not None and msg._request_id.startswith("req_")

    (req,) = server.requests
    assert req.api_key == "sk-a"
    assert req.model == MODEL
    assert req.body["max_tokens"] == 64
    assert req.body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "anthropic-version" in req.headers
    assert req.status == 200
    assert server.pending() == 0


async def test_default_usage_and_model_override(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    server.script(text("x" * 40, model="claude-other"))
    msg = await make_client().messages.create(
        model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "y" * 400}]
    )
    assert msg.model == "claude-other"
    assert msg.usage.input_tokens >= 100  # ~ len(json(messages)) // 4
    assert msg.usage.output_tokens == 10
    assert msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.cache_read_input_tokens == 0


async def test_tool_use_then_tool_result(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    call = tool_use("get_weather", {"city": "Oslo"}, text="Let me check.")
    server.script(call, text("It is sunny in Oslo."))
    client = make_client()
    tools: list[anthropic.types.ToolParam] = [
        {
            "name": "get_weather",
            "description": "Weather by city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]

    first = await client.messages.create(
        model=MODEL,
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    )
    assert first.stop_reason == "tool_use"
    block = first.content[-1]
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "Oslo"}
    assert block.id == call.content[-1]["id"]
    assert block.id.startswith("toolu_")

    history: list[MessageParam] = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}],
        },
    ]
    second = await client.messages.create(
        model=MODEL, max_tokens=100, tools=tools, messages=history
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    sent = server.requests[1].body["messages"]
    assert sent[1]["content"][-1]["type"] == "tool_use"  # SDK models are accepted back as params
    assert sent[1]["content"][-1]["id"] == block.id
    assert sent[2]["content"][0]["tool_use_id"] == block.id

    # a tool_result pointing at an unknown id is rejected like the real API does
    history[2] = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_bogus", "content": "x"}],
    }
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        await client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=history)
    assert "unexpected `tool_use_id`" in str(exc_info.value.api_message)
    assert "toolu_bogus" in str(exc_info.value.api_message)

    # ... and so is a follow-up that forgets the tool_result
    history[2] = {"role": "user", "content": "and tomorrow?"}
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        await client.messages.create(model=MODEL, max_tokens=100, tools=tools, messages=history)
    assert "without `tool_result`" in str(exc_info.value.api_message)


async def test_rate_limit_with_retry_after(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    server.script(error(429, retry_after=7))
    with pytest.raises(anthropic.RateLimitError) as exc_info:
        await make_client().messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    err = exc_info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "7"
    assert err.type == "rate_limit_error"
    assert err.request_id is not None


async def test_overloaded_529(server: AnthropicServer, make_client: ClientFactory) -> None:
    server.script(error(529, retry_after=0.5, message="busy"))
    with pytest.raises(anthropic.APIStatusError) as exc_info:
        await make_client().messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    err = exc_info.value
    assert err.status_code == 529
    assert isinstance(err, anthropic.OverloadedError)
    assert err.type == "overloaded_error"
    assert err.api_message == "busy"
    assert err.response.headers["retry-after"] == "0.5"


async def test_invalid_key_401(server: AnthropicServer, make_client: ClientFactory) -> None:
    server.valid_keys = {"sk-good"}
    server.default = text("ok")

    ok = await make_client(api_key="sk-good").messages.create(
        model=MODEL, max_tokens=10, messages=HELLO
    )
    assert ok.content[0].type == "text"

    # api_key= (this SDK sends it as "Authorization: Bearer")
    with pytest.raises(anthropic.AuthenticationError) as exc_info:
        await make_client(api_key="sk-bad").messages.create(
            model=MODEL, max_tokens=10, messages=HELLO
        )
    assert exc_info.value.status_code == 401
    assert exc_info.value.type == "authentication_error"

    # auth_token= (Bearer)
    with pytest.raises(anthropic.AuthenticationError):
        await make_client(auth_token="tok-bad").messages.create(
            model=MODEL, max_tokens=10, messages=HELLO
        )
    bearer = await make_client(auth_token="sk-good").messages.create(
        model=MODEL, max_tokens=10, messages=HELLO
    )
    assert bearer.content[0].type == "text"

    # the classic x-api-key header
    with pytest.raises(anthropic.AuthenticationError):
        await make_client(api_key="sk-good").messages.create(
            model=MODEL,
            max_tokens=10,
            messages=HELLO,
            extra_headers={"x-api-key": "sk-bad", "Authorization": anthropic.omit},
        )

    assert [(r.api_key, r.status) for r in server.requests] == [
        ("sk-good", 200),
        ("sk-bad", 401),
        ("tok-bad", 401),
        ("sk-good", 200),
        ("sk-bad", 401),
    ]
    assert "authorization" not in server.requests[-1].headers
    assert server.requests[-1].headers["x-api-key"] == "sk-bad"


async def test_per_key_and_per_model_scripting(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    server.script(error(429, retry_after=1), api_key="key-a")
    server.script(text("from B"), api_key="key-b")
    server.script(text("B on the big model"), api_key="key-b", model="claude-big")
    server.script(text("any key, small model"), model="claude-small")
    server.script(text("fallback"))

    a, b = make_client(api_key="key-a"), make_client(api_key="key-b")
    with pytest.raises(anthropic.RateLimitError):
        await a.messages.create(model=MODEL, max_tokens=10, messages=HELLO)

    async def say(client: anthropic.AsyncAnthropic, model: str = MODEL) -> str:
        msg = await client.messages.create(model=model, max_tokens=10, messages=HELLO)
        block = msg.content[0]
        assert block.type == "text"
        return block.text

    assert await say(b, "claude-big") == "B on the big model"  # (model, key) beats (None, key)
    assert await say(b, "claude-small") == "from B"  # (None, key) beats (model, None)
    assert await say(b, "claude-small") == "any key, small model"  # key queue exhausted
    assert await say(a) == "fallback"  # key-a queue exhausted -> default queue

    assert [r.status for r in server.requests_for(api_key="key-a")] == [429, 200]
    assert len(server.requests_for(api_key="key-b")) == 3
    assert len(server.requests_for(api_key="key-b", model="claude-small")) == 2
    assert server.pending() == 0


async def test_nothing_scripted_is_a_loud_500(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    with pytest.raises(anthropic.InternalServerError) as exc_info:
        await make_client(api_key="sk-z").messages.create(
            model=MODEL, max_tokens=10, messages=HELLO
        )
    assert exc_info.value.status_code == 500
    assert exc_info.value.type == "api_error"
    assert exc_info.value.api_message == f"no scripted reply for model {MODEL} key sk-z"
    assert len(server.unscripted) == 1

    server.default = text("default")
    for _ in range(2):  # the default is never consumed
        msg = await make_client().messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert msg.content[0].type == "text" and msg.content[0].text == "default"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"messages": []}, "messages: at least one message is required"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        (
            {"messages": [{"role": "assistant", "content": "hi"}]},
            'messages: first message must use the "user" role',
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
            'found multiple "user" roles in a row',
        ),
        ({"messages": [{"role": "system", "content": "a"}]}, "messages.0.role"),
        ({"tools": [{"name": "t"}]}, "tools.0.custom.input_schema: Field required"),
        (
            {"tools": [{"input_schema": {"type": "object"}}]},
            "tools.0.name: Field required",
        ),
        ({"system": [{"type": "image"}]}, "system.0.type"),
        ({"stream": True}, "streaming is not supported"),
    ],
)
async def test_invalid_requests_get_400(
    server: AnthropicServer,
    make_client: ClientFactory,
    kwargs: dict[str, Any],
    expected: str,
) -> None:
    server.script(text("never served"))
    params: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": HELLO, **kwargs}
    with pytest.raises(anthropic.BadRequestError) as exc_info:
        await make_client().messages.create(**params)
    assert exc_info.value.type == "invalid_request_error"
    assert expected in str(exc_info.value.api_message)
    assert server.pending() == 1  # a rejected request does not consume the script


async def test_missing_model_max_tokens_messages(make_client: ClientFactory) -> None:
    # the SDK refuses to send these itself, so go around its type checks
    client = make_client()
    for body, expected in [
        ({"max_tokens": 5, "messages": HELLO}, "model: Field required"),
        ({"model": MODEL, "messages": HELLO}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 5}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": "5", "messages": HELLO}, "max_tokens: Input should be"),
    ]:
        with pytest.raises(anthropic.BadRequestError) as exc_info:
            await client.post("/v1/messages", body=body, cast_to=object)
        assert str(exc_info.value.api_message).startswith(expected)


async def test_count_tokens(server: AnthropicServer, make_client: ClientFactory) -> None:
    result = await make_client().messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "z" * 800}]
    )
    assert 200 <= result.input_tokens <= 220
    assert len(server.count_tokens_requests) == 1
    assert server.requests == []


async def test_delay_and_client_timeout(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    server.script(text("slow", delay=0.2), text("too slow", delay=5))
    client = make_client()
    t0 = time.monotonic()
    msg = await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert msg.content[0].type == "text"
    assert time.monotonic() - t0 >= 0.2

    with pytest.raises(anthropic.APITimeoutError):
        await client.messages.create(model=MODEL, max_tokens=10, messages=HELLO, timeout=0.1)


async def test_unknown_path_is_api_shaped_404(make_client: ClientFactory) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc_info:
        await make_client().models.list()
    assert exc_info.value.type == "not_found_error"


async def test_custom_reply_headers_and_stop_reason(
    server: AnthropicServer, make_client: ClientFactory
) -> None:
    server.script(
        Reply(
            content=[{"type": "text", "text": "cut"}],
            stop_reason="max_tokens",
            headers={"anthropic-ratelimit-requests-remaining": "3"},
        )
    )
    raw = await make_client().messages.with_raw_response.create(
        model=MODEL, max_tokens=1, messages=HELLO
    )
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "3"
    msg = await raw.parse()
    assert msg.stop_reason == "max_tokens"
