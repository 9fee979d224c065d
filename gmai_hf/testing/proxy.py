"""A fault-injecting HTTP proxy on loopback, in front of an OpenAI-compatible server (for tests).

With ``upstream_port=None`` and a ``reply`` function it is a scripted server on its own.

Each chat-completions request is passed to ``decide(key, seen)`` (``key``: a hash of the
request's messages, i.e. of one question; ``seen``: how often that key came before), which
returns a fault or None (forward it):

- ``"429"``: Too Many Requests with ``Retry-After: 1``;
- ``"500"``: an Internal Server Error;
- ``"drop"``: the connection closed without an answer;
- ``"slow"``: held for :attr:`FaultProxy.slow_s` (past the client's timeout), then forwarded.

Every request is logged (``key``, ``fault``, upstream ``status``), so a test can check which
questions were asked, how often, and that none was asked again after it was answered.
``delay_s`` holds every forwarded request that long, as a hosted API's network and queue would
(for benchmarks of concurrency). ``reply(prompt_text)`` may answer a request itself (a scripted
judge): a string is returned as the completion's text, None forwards the request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS: tuple[str, ...] = ("429", "500", "drop", "slow")

Decide = Callable[[str, int], "str | None"]


def in_order(*faults: str) -> Decide:
    """The first requests get ``faults`` one each, in order; every later one is forwarded."""
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown}: choose from {', '.join(FAULTS)}")
    queue = list(faults)
    lock = threading.Lock()

    def decide(key: str, seen: int) -> str | None:
        with lock:
            return queue.pop(0) if queue else None

    return decide


@dataclass
class Logged:
    key: str
    fault: str | None
    status: int | None = None


@dataclass
class FaultProxy:
    """The proxy; ``with FaultProxy(upstream_port, decide) as proxy: ... proxy.base_url``."""

    upstream_port: int | None
    decide: Decide = field(default=lambda key, seen: None)
    slow_s: float = 3.0
    delay_s: float = 0.0
    reply: Callable[[str], str | None] | None = None
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if proxy.upstream_port is None:  # a scripted server alone: it lists no model
                    self._reply(200, b'{"object": "list", "data": []}')
                else:
                    self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.endswith("/chat/completions"):
                    self._forward(body)
                    return
                key = _key(body)
                with proxy._lock:
                    seen = proxy._seen[key]
                    proxy._seen[key] += 1
                    fault = proxy.decide(key, seen)
                    entry = Logged(key, fault)
                    proxy.log.append(entry)
                if fault == "429":
                    self._reply(
                        429, b'{"error": {"message": "rate limited by the test proxy"}}', {"Retry-After": "1"}
                    )
                elif fault == "500":
                    self._reply(500, b'{"error": {"message": "the test proxy failed this request"}}')
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif proxy.reply is not None and (text := proxy.reply(_text(body))) is not None:
                    self._reply(200, _completion(text))
                    entry.status = 200
                else:
                    time.sleep(proxy.slow_s if fault == "slow" else proxy.delay_s)
                    entry.status = self._forward(body)

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body: bytes) -> int | None:
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=300)
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self._reply(response.status, data)
                    return response.status
                except OSError:  # the client gave up (a "slow" fault) or the server is gone
                    self.close_connection = True
                    return None
                finally:
                    upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def asked(self) -> Counter[str]:
        """How often each question reached the server and was answered there (status 200)."""
        return Counter(entry.key for entry in self.log if entry.status == 200)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _text(body: bytes) -> str:
    """The text of a request's (last) user message."""
    try:
        content = json.loads(body)["messages"][-1]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _completion(text: str) -> bytes:
    """A chat completion holding ``text``, as an OpenAI-compatible server writes one."""
    return json.dumps(
        {
            "id": "scripted",
            "object": "chat.completion",
            "created": 0,
            "model": "scripted-judge",
            "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
            ],
            "usage": {"prompt_tokens": len(text), "completion_tokens": 1, "total_tokens": len(text) + 1},
        }
    ).encode()


def _key(body: bytes) -> str:
    """One question's identity: a hash of the request's messages (image and prompt)."""
    try:
        messages = json.loads(body).get("messages")
    except ValueError:
        messages = None
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
