"""One client for OpenAI-compatible chat-completions servers: concurrency, retries, accounting.

Both the ``openai`` backend (the model under test: vLLM, SGLang, ``transformers serve``,
LMDeploy, TGI, Ollama, hosted APIs) and the LLM judge talk to servers through
:class:`ChatClient`. It keeps up to ``concurrency`` requests in flight (the ``openai`` package's
async client on an event loop of its own thread), hands back each reply as soon as it arrives,
and retries what a retry can fix:

- 408, 409, 429 and 5xx answers, timeouts and dropped connections are retried up to
  ``max_retries`` times, after ``Retry-After`` when the server sends one, else after an
  exponential backoff with jitter (1, 2, 4, ... s, at most :data:`MAX_BACKOFF_S`, times 0.5-1.5);
- other answers (400 bad request, 401, 404 unknown model, ...) fail at once;
- a reply is read as a chat completion before it counts (:func:`read_completion`): a 200 that is
  not JSON, has no choice, no message, or content that is not a string (null without a refusal)
  is a failed attempt, retried like a 5xx; a refusal is a failure that says so;
- ``request_timeout`` bounds the whole request, body included (a server that drips its body is
  cut off), and a body over ``max_reply_bytes`` is abandoned as it arrives (memory stays bounded);
- a request that still fails is returned as a :class:`Reply` with ``error`` set (never as an
  answer). Secrets (the API key, credentials in the base URL) are scrubbed from every text before
  it is cut, logged, stored or shown, answers included (:class:`Secrets`).

Every reply carries its own accounting (``requests``, ``retries``, ``prompt_tokens``,
``completion_tokens``), so totals add up over processes and resumed runs.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import queue
import random
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
#: First backoff in seconds (doubled after each retry); tests lower it with GMAI_HF_BACKOFF_S.
BACKOFF_S = float(os.environ.get("GMAI_HF_BACKOFF_S", "1.0"))
MAX_BACKOFF_S = 60.0
#: The longest ``Retry-After`` honoured; a server asking for more gets this.
MAX_RETRY_AFTER_S = 300.0
RETRYABLE_STATUS = frozenset({408, 409, 429})

#: One request: ``(key, messages, max_tokens)``; ``key`` comes back in the reply.
Request = tuple[Any, list[dict[str, Any]], int]
#: How much of a server's error body goes into a message (after secrets are scrubbed).
ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class ClientOptions:
    """How to reach an OpenAI-compatible server: one set of options for the ``openai`` backend
    (``--base-url`` ...) and the LLM judge (``--judge-base-url`` ...)."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    request_timeout: float = 120.0
    max_retries: int = 5
    max_reply_bytes: int = 1_000_000

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ClientOptions:
        """Options from a mapping (``RunConfig.backend_options``, a judge dict); None: the default."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown client option(s) {unknown}: choose among {sorted(names)}")
        return cls(**{key: value for key, value in values.items() if value is not None})

    def validate(self) -> None:
        checks = [
            (self.concurrency >= 1, f"--concurrency must be at least 1, got {self.concurrency}"),
            (self.max_retries >= 0, f"--max-retries must be 0 or more, got {self.max_retries}"),
            (self.request_timeout > 0, f"--request-timeout must be positive, got {self.request_timeout}"),
            (self.max_reply_bytes >= 1, f"--max-reply-bytes must be positive, got {self.max_reply_bytes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ReplyTooLarge(Exception):
    """A reply body past ``max_reply_bytes`` (a failure that says so; not retried)."""


class MalformedReply(Exception):
    """A 200 whose body is not a usable chat completion (retried like a 5xx)."""


class Refused(Exception):
    """The model declined to answer (``content`` null with a ``refusal``): a failure, not retried."""


class Secrets:
    """The API key and the base URL's credentials (user info, query values), scrubbed from text."""

    def __init__(self, api_key: str | None, base_url: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        found = [api_key, parts.username, parts.password]
        found += [value for _, value in urllib.parse.parse_qsl(parts.query) if value]
        # the longest first, so a secret containing another is replaced whole
        self.values = sorted({value for value in found if value and len(value) >= 3}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


def redact_url(url: str) -> str:
    """``url`` without credentials: user info and query values become ``***`` (for records and logs)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username or parts.password:
        netloc = f"***@{netloc}"
    query = urllib.parse.urlencode([(key, "***") for key, _ in urllib.parse.parse_qsl(parts.query)], safe="*")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def read_completion(body: bytes) -> tuple[str, str | None, str | None, dict[str, int]]:
    """``(text, finish_reason, model, usage)`` of a chat-completion body, checked field by field.

    Raises :class:`MalformedReply` (what is wrong) or :class:`Refused` (the model's refusal).
    """
    try:
        payload = json.loads(body)
    except ValueError:
        start = body[:60].decode("utf-8", "replace").strip().replace("\n", " ")
        raise MalformedReply(f"the reply is not JSON (it starts {start!r})") from None
    if not isinstance(payload, dict):
        raise MalformedReply(f"the reply is JSON {type(payload).__name__}, not an object")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedReply("the reply has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise MalformedReply("the reply's choice has no message")
    content = message.get("content")
    if content is None:
        refusal = message.get("refusal")
        if isinstance(refusal, str) and refusal.strip():
            raise Refused(refusal.strip())
        raise MalformedReply("the reply's message content is null, with no refusal")
    if not isinstance(content, str):
        raise MalformedReply(f"the reply's message content is a {type(content).__name__}, not text")
    finish = choice.get("finish_reason")
    model = payload.get("model")
    counts = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    usage = {
        key: counts[key]
        for key in ("prompt_tokens", "completion_tokens")
        if isinstance(counts.get(key), int) and counts[key] >= 0
    }
    return (
        content,
        finish if isinstance(finish, str) else None,
        model if isinstance(model, str) else None,
        usage,
    )


@dataclass
class Reply:
    """The outcome of one request: ``text`` (None with ``error`` when it failed)."""

    key: Any
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    #: Whether asking again may help (no for a refusal, a 400, a reply over the size cap).
    retry: bool = True


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's API."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or OFFICIAL_BASE_URL).rstrip("/")


class ChatClient:
    """Chat completions against one model of one OpenAI-compatible server."""

    def __init__(
        self,
        model: str,
        options: ClientOptions | None = None,
        *,
        seed: int | None = 0,
        what: str = "model",
    ) -> None:
        options = options or ClientOptions()
        options.validate()
        self.options = options
        self.model = model
        self.base_url = resolve_base_url(options.base_url)
        self.api_key_env = options.api_key_env
        key = os.environ.get(options.api_key_env)
        if not key and self.base_url == OFFICIAL_BASE_URL:
            raise ValueError(
                f"no API key: set the environment variable {options.api_key_env} (or name another with "
                "--api-key-env), or point --base-url at your own server"
            )
        self._key = key or "EMPTY"  # local servers (vLLM, transformers serve) accept any key
        self.secrets = Secrets(key, self.base_url)
        #: The base URL as records and messages show it (no credentials).
        self.endpoint = redact_url(self.base_url)
        self.concurrency = options.concurrency
        self.request_timeout = options.request_timeout
        self.max_retries = options.max_retries
        self.max_reply_bytes = options.max_reply_bytes
        self.seed = seed
        self.what = what
        #: The id under which the server lists the model (``/models``), when it lists it.
        self.listed_model: str | None = None
        #: Every model name the server's replies gave (servers may resolve an alias).
        self.served_models: set[str] = set()

    # --- one request -----------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """``text`` without any secret (the key, the URL's credentials)."""
        return self.secrets.scrub(text)

    def _describe_error(self, error: BaseException) -> str:
        import openai

        if isinstance(error, openai.APIStatusError):
            body = error.response.text if error.response is not None else ""
            body = self.scrub(body).strip().replace("\n", " ")[:ERROR_BODY_CHARS]
            text = f"HTTP {error.status_code} from {self.endpoint}: {body or self.scrub(error.message)}"
            if error.status_code == 400:
                text += (
                    f" (the server refused the request as it is: check --model {self.model!r}, and that the "
                    "prompt, image and --max-new-tokens fit what it accepts; retrying will not help)"
                )
            return text
        if isinstance(error, (openai.APITimeoutError, TimeoutError)):
            return f"no complete answer from {self.endpoint} within {self.request_timeout:g} s"
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            return self.scrub(f"connection to {self.endpoint} failed ({type(cause).__name__}: {cause})")
        if isinstance(error, MalformedReply):
            return self.scrub(f"{self.endpoint} sent a malformed reply: {error}")
        if isinstance(error, Refused):
            return self.scrub(f"the {self.what} refused to answer: {error}")[: ERROR_BODY_CHARS + 40]
        return self.scrub(f"{type(error).__name__}: {error}")

    def _retryable(self, error: BaseException) -> bool:
        import openai

        if isinstance(error, openai.APIStatusError):
            return error.status_code in RETRYABLE_STATUS or error.status_code >= 500
        # timeouts (the whole request's too), dropped connections, malformed 200s
        return isinstance(error, (openai.APIConnectionError, TimeoutError, MalformedReply))

    @staticmethod
    def _retry_after(error: BaseException) -> float | None:
        """Seconds the server asked to wait (``Retry-After``: seconds or an HTTP date), if it did."""
        response = getattr(error, "response", None)
        if response is None:
            return None
        headers = response.headers
        if headers.get("retry-after-ms"):
            try:
                return float(headers["retry-after-ms"]) / 1000
            except ValueError:
                pass
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            pass
        try:  # an HTTP date; anything else is ignored (the usual backoff applies)
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())

    async def _body(self, client: Any, messages: list[dict[str, Any]], max_tokens: int) -> bytes:
        """One request's body, read as it arrives and abandoned past ``max_reply_bytes``."""
        body = bytearray()
        async with client.chat.completions.with_streaming_response.create(
            model=self.model,
            messages=messages,
            temperature=0,
            max_tokens=max_tokens,
            **({"seed": self.seed} if self.seed is not None else {}),
        ) as response:
            async for chunk in response.iter_bytes():
                body += chunk
                if len(body) > self.max_reply_bytes:
                    raise ReplyTooLarge(
                        f"the reply from {self.endpoint} is over {self.max_reply_bytes} bytes "
                        "(--max-reply-bytes); abandoned"
                    )
        return bytes(body)

    async def _one(self, client: Any, request: Request) -> Reply:
        key, messages, max_tokens = request
        usage = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for attempt in range(self.max_retries + 1):
            usage["requests"] += 1
            try:
                # the whole request, body included: a server dripping its body is cut off here
                body = await asyncio.wait_for(self._body(client, messages, max_tokens), self.request_timeout)
                text, finish, model, counts = read_completion(body)
            except ReplyTooLarge as error:
                return Reply(key, None, error=self.scrub(str(error)), usage=usage, retry=False)
            except Exception as error:
                retryable = self._retryable(error)
                if not retryable or attempt == self.max_retries:
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    error_text = self._describe_error(error) + tries
                    return Reply(key, None, error=error_text, usage=usage, retry=retryable)
                usage["retries"] += 1
                wait = self._retry_after(error)
                if wait is None:
                    wait = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.5)
                logger.debug("%s; retry %d in %.1f s", self._describe_error(error), attempt + 1, wait)
                await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))
                continue
            for name, count in counts.items():
                usage[name] += count
            return Reply(key, self.scrub(text), finish_reason=finish, model=model, usage=usage)
        raise AssertionError("unreachable")  # the loop always returns

    # --- many requests ---------------------------------------------------------------------

    async def _make_client(self) -> Any:
        """The async client, made in the event loop's thread that will use it."""
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._key, max_retries=0, timeout=self.request_timeout
        )

    def check(self) -> None:
        """Fail at once, in one line, before any question is sent: the server cannot be reached,
        refuses the key, or does not serve the model (naming the models it lists)."""
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key=self._key, max_retries=0, timeout=30)
        try:
            served = [str(model.id) for model in client.models.list().data]
        except openai.NotFoundError:  # a server without /models: the first request will tell
            return
        except openai.APIStatusError as error:
            if error.status_code in (401, 403):
                raise ValueError(
                    f"the {self.what} server at {self.endpoint} refused the API key from ${self.api_key_env} "
                    f"(HTTP {error.status_code}): set a valid key"
                ) from None
            return
        except openai.APIConnectionError as error:
            raise ValueError(
                f"cannot reach the {self.what} server at {self.endpoint}: {self._describe_error(error)}; "
                "is it running, and is --base-url right (it ends in /v1)?"
            ) from None
        except Exception as error:  # an odd /models reply: the requests themselves are checked
            logger.debug("%s/models: %s", self.endpoint, self.scrub(str(error)))
            return
        finally:
            client.close()
        # some servers list "models/NAME" (Gemini's endpoint) for the NAME requests use
        listed = [name for name in served if name == self.model or name.endswith("/" + self.model)]
        if served and not listed:
            shown = ", ".join(served[:20]) + (f", ... ({len(served)} in all)" if len(served) > 20 else "")
            flag = "--judge" if self.what == "judge" else "--model"
            raise ValueError(
                f"the {self.what} server at {self.endpoint} does not serve {self.model!r}; it lists: "
                f"{shown}. Pass one of those as {flag}"
            )
        self.listed_model = listed[0] if listed else None

    def stream(self, requests: Iterable[Request]) -> Iterator[Reply]:
        """Send ``requests`` with up to ``concurrency`` in flight; yield each reply as it arrives.

        ``requests`` is consumed lazily, in the caller's thread. Stopping the iteration (an
        interrupt, an error downstream) cancels the requests still in flight.
        """
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="gmai-hf-client", daemon=True)
        thread.start()
        client = asyncio.run_coroutine_threadsafe(self._make_client(), loop).result()
        finished: queue.Queue[Any] = queue.Queue()
        pending: set[Any] = set()
        source = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < self.concurrency:
                    request = next(source, None)
                    if request is None:
                        exhausted = True
                        break
                    future = asyncio.run_coroutine_threadsafe(self._one(client, request), loop)
                    future.add_done_callback(finished.put)
                    pending.add(future)
                if not pending:
                    return
                future = finished.get()
                pending.discard(future)
                reply = future.result()
                if reply.model and reply.model not in self.served_models:
                    if reply.model != self.model and not any(m != self.model for m in self.served_models):
                        logger.warning(
                            "asked %s for %r, it answered as %r (every name it answers as is recorded)",
                            self.endpoint,
                            self.model,
                            reply.model,
                        )
                    self.served_models.add(reply.model)
                yield reply
        finally:
            for future in pending:
                future.cancel()
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    def describe(self) -> dict[str, Any]:
        """What to record about the server (never the key, nor the URL's credentials)."""
        return {
            "base_url": self.endpoint,
            "model": self.model,
            "served_models": sorted(self.served_models),
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "request_timeout_s": self.request_timeout,
            "max_reply_bytes": self.max_reply_bytes,
        }
