"""A stand-in for the Anthropic Messages API on 127.0.0.1, for driving the real Claude Code.

The real client is pointed at it with ``ANTHROPIC_BASE_URL``. It records every request
it gets (method, path, headers, JSON body) and answers ``POST /v1/messages`` the way the
real service does, as server-sent events when the request asks for a stream
(``message_start``, ``content_block_start``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``) and as one JSON message
otherwise.

Requests that carry ``tools`` are the conversation; the others are the client's side
requests (a title, a summary). Every answer is a short text reply, except the
conversation requests a test scripted a tool call for (:meth:`MessagesAPI.tool_call`):
that request is answered with the call, and the next one (which brings the tool's
result back) with text again, which ends the turn.

It is a thread in the test's process (``http.server``), listening on a free loopback
port; :meth:`MessagesAPI.close` stops it and waits for it.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

MODEL = "claude-stand-in"
REPLY = "Noted."
BODY_LIMIT = 64 * 1_048_576
"""Bytes of request body read at most; the client's requests are well under a megabyte."""


@dataclass(frozen=True)
class Request:
    """One request as the stand-in received it."""

    method: str
    path: str
    """The path without the query, e.g. ``/v1/messages``."""
    query: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: Any
    """The JSON body, or ``None`` when there was none or it was not JSON."""

    @property
    def is_message(self) -> bool:
        return self.method == "POST" and self.path == "/v1/messages"

    @property
    def is_conversation(self) -> bool:
        """A model request of the conversation itself: it offers the model tools."""
        return self.is_message and isinstance(self.body, dict) and bool(self.body.get("tools"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        return messages if isinstance(messages, list) else []


@dataclass(frozen=True)
class ToolCall:
    """A ``tool_use`` block the stand-in answers with."""

    name: str
    input: dict[str, Any]
    id: str


@dataclass
class _Script:
    """What the stand-in answers, and what it has seen, under one lock."""

    reply: str
    requests: list[Request] = field(default_factory=list)
    tool_calls: dict[int, ToolCall] = field(default_factory=dict)
    """Tool calls by the number of the conversation request (from 1) they answer."""
    conversation_count: int = 0
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)


class MessagesAPI:
    """The stand-in server. Use :func:`messages_api` (a context manager) to run one."""

    def __init__(self, reply: str = REPLY) -> None:
        self._script = _Script(reply=reply)
        handler = type("Handler", (_Handler,), {"script": self._script})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """What ``ANTHROPIC_BASE_URL`` is set to."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Request]:
        """Every request so far, in the order they arrived."""
        with self._script.lock:
            return list(self._script.requests)

    def conversation(self, since: int = 0) -> list[Request]:
        """The conversation's model requests among ``requests[since:]``."""
        return [request for request in self.requests[since:] if request.is_conversation]

    def tool_call(self, name: str, tool_input: dict[str, Any], *, request: int = 0) -> ToolCall:
        """Answer a conversation request with a call of tool ``name`` with ``tool_input``.

        ``request`` is the number of the conversation request to answer (counting from
        1 since the stand-in started); 0 means the next one to arrive.
        """
        with self._script.lock:
            number = request or self._script.conversation_count + 1
            if number <= self._script.conversation_count:
                raise ValueError(f"conversation request {number} has been answered already")
            call = ToolCall(name, tool_input, f"toolu_standin{next(self._script.ids):06d}")
            self._script.tool_calls[number] = call
            return call

    def close(self) -> None:
        """Stop serving and wait for the server's thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def messages_api(reply: str = REPLY) -> Iterator[MessagesAPI]:
    """A running stand-in, stopped on the way out."""
    server = MessagesAPI(reply)
    try:
        yield server
    finally:
        server.close()


# -- answers ---------------------------------------------------------------------------


def _usage(body: Any) -> dict[str, int]:
    size = len(json.dumps(body)) if body is not None else 0
    return {
        "input_tokens": max(1, size // 4),
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _content(answer: str | ToolCall) -> dict[str, Any]:
    if isinstance(answer, ToolCall):
        return {"type": "tool_use", "id": answer.id, "name": answer.name, "input": answer.input}
    return {"type": "text", "text": answer}


def message(answer: str | ToolCall, body: Any, message_id: str) -> dict[str, Any]:
    """The whole answer as one JSON message (a request without ``stream``)."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": _model(body),
        "content": [_content(answer)],
        "stop_reason": "tool_use" if isinstance(answer, ToolCall) else "end_turn",
        "stop_sequence": None,
        "usage": _usage(body),
    }


def events(answer: str | ToolCall, body: Any, message_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The answer as the stream of server-sent events the real service sends."""
    start = {**message(answer, body, message_id), "content": [], "stop_reason": None}
    if isinstance(answer, ToolCall):
        block = {**_content(answer), "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(answer.input)}
    else:
        block = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": answer}
    stop_reason = "tool_use" if isinstance(answer, ToolCall) else "end_turn"
    return [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


def _model(body: Any) -> str:
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) and model else MODEL


class _Handler(BaseHTTPRequestHandler):
    """Records each request and answers it; one request per connection."""

    script: _Script
    protocol_version = "HTTP/1.1"
    timeout = 30

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads :attr:`MessagesAPI.requests` instead."""

    def _handle(self) -> None:
        self.close_connection = True
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, BODY_LIMIT)) if length > 0 else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = Request(
            method=self.command,
            path=url.path,
            query=url.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        script = self.script
        with script.lock:
            script.requests.append(request)
            message_id = f"msg_standin{next(script.ids):06d}"
            answer: str | ToolCall = script.reply
            if request.is_conversation:
                script.conversation_count += 1
                answer = script.tool_calls.get(script.conversation_count, script.reply)
        if request.is_message:
            if isinstance(body, dict) and body.get("stream"):
                self._send_events(events(answer, body, message_id))
            else:
                self._send_json(HTTPStatus.OK, message(answer, body, message_id))
        elif request.method == "POST" and request.path == "/v1/messages/count_tokens":
            self._send_json(HTTPStatus.OK, {"input_tokens": _usage(body)["input_tokens"]})
        elif request.method in ("GET", "HEAD") and request.path == "/":
            # The client looks at the base URL once at start, to see that it answers.
            self._send_json(HTTPStatus.OK, {})
        else:
            error = {"type": "not_found_error", "message": f"{request.path}: not in the stand-in"}
            self._send_json(HTTPStatus.NOT_FOUND, {"type": "error", "error": error})

    def _send_json(self, status: HTTPStatus, data: dict[str, Any]) -> None:
        payload = json.dumps(data).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_events(self, stream: list[tuple[str, dict[str, Any]]]) -> None:
        payload = "".join(
            f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in stream
        ).encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
