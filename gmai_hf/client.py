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
- a request that still fails is returned as a :class:`Reply` with ``error`` set (never as an
  empty answer). The API key is never logged, recorded or shown: it is scrubbed from errors.

Every reply carries its own accounting (``requests``, ``retries``, ``prompt_tokens``,
``completion_tokens``), so totals add up over processes and resumed runs.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

OFFICIAL_BASE_URL = "https://api.openai.com/v1"
DEFAULTS: dict[str, Any] = {
    "api_key_env": "OPENAI_API_KEY",
    "concurrency": 16,
    "request_timeout": 120.0,
    "max_retries": 5,
}
#: First backoff in seconds (doubled after each retry); tests lower it with GMAI_HF_BACKOFF_S.
BACKOFF_S = float(os.environ.get("GMAI_HF_BACKOFF_S", "1.0"))
MAX_BACKOFF_S = 60.0
#: The longest ``Retry-After`` honoured; a server asking for more gets this.
MAX_RETRY_AFTER_S = 300.0
RETRYABLE_STATUS = frozenset({408, 409, 429})

#: One request: ``(key, messages, max_tokens)``; ``key`` comes back in the reply.
Request = tuple[Any, list[dict[str, Any]], int]


@dataclass
class Reply:
    """The outcome of one request: ``text`` (None with ``error`` when it failed)."""

    key: Any
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


def resolve_base_url(base_url: str | None) -> str:
    """``base_url``, else ``$OPENAI_BASE_URL``, else OpenAI's API."""
    return (base_url or os.environ.get("OPENAI_BASE_URL") or OFFICIAL_BASE_URL).rstrip("/")


class ChatClient:
    """Chat completions against one model of one OpenAI-compatible server."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = DEFAULTS["api_key_env"],
        concurrency: int = DEFAULTS["concurrency"],
        request_timeout: float = DEFAULTS["request_timeout"],
        max_retries: int = DEFAULTS["max_retries"],
        seed: int | None = 0,
        what: str = "model",
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {max_retries}")
        if request_timeout <= 0:
            raise ValueError(f"--request-timeout must be positive, got {request_timeout}")
        self.model = model
        self.base_url = resolve_base_url(base_url)
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env)
        if not key and self.base_url == OFFICIAL_BASE_URL:
            raise ValueError(
                f"no API key: set the environment variable {api_key_env} (or name another with "
                "--api-key-env), or point --base-url at your own server"
            )
        self._key = key or "EMPTY"  # local servers (vLLM, transformers serve) accept any key
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.seed = seed
        self.what = what
        self.server_model: str | None = None

    # --- one request -----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key != "EMPTY" else text

    def _describe_error(self, error: BaseException) -> str:
        import openai

        if isinstance(error, openai.APIStatusError):
            body = error.response.text.strip().replace("\n", " ")[:300] if error.response is not None else ""
            text = f"HTTP {error.status_code} from {self.base_url}: {body or error.message}"
        elif isinstance(error, openai.APITimeoutError):
            text = f"no answer from {self.base_url} within {self.request_timeout:g} s"
        elif isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            text = f"connection to {self.base_url} failed ({type(cause).__name__}: {cause})"
        else:
            text = f"{type(error).__name__}: {error}"
        return self._scrub(text)

    def _retryable(self, error: BaseException) -> bool:
        import openai

        if isinstance(error, openai.APIStatusError):
            return error.status_code in RETRYABLE_STATUS or error.status_code >= 500
        return isinstance(error, openai.APIConnectionError)  # includes APITimeoutError

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

    async def _one(self, client: Any, request: Request) -> Reply:
        key, messages, max_tokens = request
        usage = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}
        for attempt in range(self.max_retries + 1):
            usage["requests"] += 1
            try:
                response = await client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    temperature=0,
                    max_tokens=max_tokens,
                    **({"seed": self.seed} if self.seed is not None else {}),
                )
            except Exception as error:
                if not self._retryable(error) or attempt == self.max_retries:
                    tries = f" after {attempt + 1} tries" if attempt else ""
                    return Reply(key, None, error=self._describe_error(error) + tries, usage=usage)
                usage["retries"] += 1
                wait = self._retry_after(error)
                if wait is None:
                    wait = min(MAX_BACKOFF_S, BACKOFF_S * 2**attempt) * random.uniform(0.5, 1.5)
                logger.debug("%s; retry %d in %.1f s", self._describe_error(error), attempt + 1, wait)
                await asyncio.sleep(min(wait, MAX_RETRY_AFTER_S))
                continue
            if response.usage is not None:
                usage["prompt_tokens"] += response.usage.prompt_tokens or 0
                usage["completion_tokens"] += response.usage.completion_tokens or 0
            if not response.choices:
                return Reply(key, None, error=f"the {self.what} server returned no choice", usage=usage)
            choice = response.choices[0]
            return Reply(
                key,
                choice.message.content or "",
                finish_reason=choice.finish_reason,
                model=response.model,
                usage=usage,
            )
        raise AssertionError("unreachable")  # the loop always returns

    # --- many requests ---------------------------------------------------------------------

    async def _make_client(self) -> Any:
        """The async client, made in the event loop's thread that will use it."""
        import openai

        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._key, max_retries=0, timeout=self.request_timeout
        )

    def check(self) -> None:
        """Fail at once, in one line, when the server cannot be reached or refuses the key."""
        import openai

        client = openai.OpenAI(base_url=self.base_url, api_key=self._key, max_retries=0, timeout=30)
        try:
            served = [model.id for model in client.models.list().data]
        except openai.NotFoundError:  # a server without /models: the first request will tell
            return
        except openai.APIStatusError as error:
            if error.status_code in (401, 403):
                raise ValueError(
                    f"the {self.what} server at {self.base_url} refused the API key from ${self.api_key_env} "
                    f"(HTTP {error.status_code}): set a valid key"
                ) from None
            return
        except openai.APIConnectionError as error:
            raise ValueError(
                f"cannot reach the {self.what} server at {self.base_url}: {self._describe_error(error)}; "
                "is it running, and is --base-url right (it ends in /v1)?"
            ) from None
        finally:
            client.close()
        if served and self.model not in served:
            shown = ", ".join(served[:10]) + (", ..." if len(served) > 10 else "")
            logger.warning("%s does not list the model %r (it lists: %s)", self.base_url, self.model, shown)

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
                if reply.model and self.server_model is None:
                    self.server_model = reply.model
                yield reply
        finally:
            for future in pending:
                future.cancel()
            asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    def describe(self) -> dict[str, Any]:
        """What to record about the server (never the key)."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "server_model": self.server_model,
            "concurrency": self.concurrency,
            "max_retries": self.max_retries,
            "request_timeout_s": self.request_timeout,
        }
