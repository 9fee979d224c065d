"""A fault-injecting HTTP proxy on loopback, in front of an OpenAI-compatible server (for tests).

With ``upstream_port=None`` and a ``reply`` function it is a scripted server on its own.

Each chat-completions request is passed to ``decide(key, seen)`` (``key``: a hash of the
request's messages, i.e. of one question; ``seen``: how often that key came before), which
returns a fault or None (forward it):

- ``"429"``: Too Many Requests with ``Retry-After: 1``;
- ``"500"``: an Internal Server Error; ``"400"``: a Bad Request;
- ``"drop"``: the connection closed without an answer;
- ``"slow"``: held for :attr:`FaultProxy.slow_s` (past the client's timeout), then forwarded;
- ``"drip"``: a 200 whose body arrives a few bytes at a time, :attr:`FaultProxy.slow_s` in all;
- malformed 200s, as a misbehaving server sends them: ``"html"`` (an HTML page), ``"no-choices"``,
  ``"no-message"``, ``"content-list"``, ``"content-number"``, ``"content-null"`` (no refusal);
- ``"refusal"``: content null with a refusal; ``"huge"``: a 5 MB completion; ``"other-model"``: a
  completion naming another model than asked; ``"echo-key"``: a 500 whose body, and
  ``"key-in-answer"``: a completion whose text, repeat the request's API key.

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

#: Faults answered with a 200 whose completion is bent (see :func:`_bent_completion`).
BENT = ("html", "no-choices", "no-message", "content-list", "content-number", "content-null", "refusal")
BENT += ("other-model", "key-in-answer")
FAULTS: tuple[str, ...] = ("429", "500", "400", "drop", "slow", "drip", "huge", "echo-key", *BENT)

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
    #: The model names a scripted server lists at ``/v1/models`` (none by default).
    models: list[str] = field(default_factory=list)
    log: list[Logged] = field(default_factory=list)
    #: Every chat-completions request body, as sent (what a server receives).
    bodies: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if proxy.upstream_port is None:  # a scripted server alone: it lists proxy.models
                    data = [{"id": name, "object": "model"} for name in proxy.models]
                    self._reply(200, json.dumps({"object": "list", "data": data}).encode())
                else:
                    self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.endswith("/chat/completions"):
                    self._forward(body)
                    return
                key = _key(body)
                with proxy._lock:
                    proxy.bodies.append(body)
                    seen = proxy._seen[key]
                    proxy._seen[key] += 1
                    fault = proxy.decide(key, seen)
                    entry = Logged(key, fault)
                    proxy.log.append(entry)
                if fault == "429":
                    self._reply(
                        429, b'{"error": {"message": "rate limited by the test proxy"}}', {"Retry-After": "1"}
                    )
                elif fault == "400":
                    self._reply(400, b'{"error": {"message": "the prompt is longer than the model takes"}}')
                elif fault == "500":
                    self._reply(500, b'{"error": {"message": "the test proxy failed this request"}}')
                elif fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "echo-key":
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    message = "x" * 290 + f" invalid key {key} for this request"
                    self._reply(500, json.dumps({"error": {"message": message}}).encode())
                elif fault == "drip":
                    self._drip(_completion("A", _model(body)))
                elif fault == "huge":
                    self._huge(_model(body))
                elif fault in BENT:
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._reply(200, _bent_completion(fault, _model(body), key))
                    entry.status = 200
                elif proxy.reply is not None and (text := proxy.reply(_text(body))) is not None:
                    self._reply(200, _completion(text, _model(body)))
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
                try:
                    self.wfile.write(body)
                except OSError:  # the client gave up (a reply it would not read whole)
                    self.close_connection = True

            def _drip(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = max(1, len(body) // 20)
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start : start + step])
                        self.wfile.flush()
                        time.sleep(proxy.slow_s / 20)
                except OSError:  # the client gave up, as it should
                    self.close_connection = True

            def _huge(self, model: str, size: int = 5_000_000) -> None:
                """A completion of ``size`` letters, written in pieces (never whole in memory)."""
                head, tail = _completion("@", model).split(b"@")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(head) + size + len(tail)))
                self.end_headers()
                piece = b"A" * 65536
                try:
                    self.wfile.write(head)
                    for start in range(0, size, len(piece)):
                        self.wfile.write(piece[: size - start])
                    self.wfile.write(tail)
                except OSError:  # the client gave up, as it should
                    self.close_connection = True

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


def _model(body: bytes) -> str:
    """The model a request asks for (a server answers under that name)."""
    try:
        return str(json.loads(body).get("model") or "scripted")
    except (ValueError, AttributeError):
        return "scripted"


def _payload(text: object, model: str) -> dict:
    return {
        "id": "scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


def _completion(text: str, model: str = "scripted") -> bytes:
    """A chat completion holding ``text``, as an OpenAI-compatible server writes one."""
    return json.dumps(_payload(text, model)).encode()


def _bent_completion(fault: str, model: str, key: str) -> bytes:
    """The 200 a misbehaving server sends for ``fault`` (one of :data:`BENT`)."""
    if fault == "html":
        return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    payload = _payload("A", model)
    message = payload["choices"][0]["message"]
    if fault == "no-choices":
        payload["choices"] = []
    elif fault == "no-message":
        del payload["choices"][0]["message"]
    elif fault == "content-list":
        message["content"] = [{"type": "text", "text": "A"}]
    elif fault == "content-number":
        message["content"] = 42
    elif fault == "content-null":
        message["content"] = None
    elif fault == "refusal":
        message.update(content=None, refusal="I cannot help with medical images.")
    elif fault == "other-model":
        payload["model"] = "another-model-v2"
    elif fault == "key-in-answer":
        message["content"] = f"The answer is A (your key is {key})"
    return json.dumps(payload).encode()


def _key(body: bytes) -> str:
    """One question's identity: a hash of the request's messages (image and prompt)."""
    try:
        messages = json.loads(body).get("messages")
    except ValueError:
        messages = None
    return hashlib.sha1(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]
