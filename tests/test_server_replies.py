"""What a misbehaving OpenAI-compatible server sends is checked before it counts (issue 17).

A scripted server of ours on 127.0.0.1 (``FaultProxy`` without upstream) answers every question
"A", or bends one reply as a faulty server would: HTML, no choices, no message, content that is
not text, a dripping or huge body, another model's name, an echoed API key.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest

from gmai_hf import SAMPLE_DIR, client, runner
from gmai_hf.client import ChatClient, ClientOptions, Secrets, read_completion, redact_url
from gmai_hf.runner import RunConfig
from gmai_hf.testing.proxy import FaultProxy, in_order

KEY = "sk-test-SECRET-0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Which option? A or B"}]


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "BACKOFF_S", 0.01)
    monkeypatch.setenv("GMAI_HF_BACKOFF_S", "0.01")
    monkeypatch.setenv("TEST_KEY", KEY)


def _ask(proxy: FaultProxy, n: int = 1, **options: object) -> list[client.Reply]:
    settings = {"base_url": proxy.base_url, "api_key_env": "TEST_KEY", "max_retries": 2, **options}
    chat = ChatClient("m", ClientOptions(**settings))  # type: ignore[arg-type]
    return sorted(chat.stream((i, MESSAGES, 8) for i in range(n)), key=lambda reply: reply.key)


MALFORMED = ["html", "no-choices", "no-message", "content-list", "content-number", "content-null"]


@pytest.mark.parametrize("fault", MALFORMED)
def test_a_malformed_200_is_retried_like_a_5xx(fault: str) -> None:
    with FaultProxy(None, in_order(fault), reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy)
    assert reply.text == "A" and reply.error is None
    assert reply.usage["requests"] == 2 and reply.usage["retries"] == 1


@pytest.mark.parametrize("fault", MALFORMED)
def test_a_malformed_200_every_time_is_a_failure_with_its_reason(fault: str) -> None:
    with FaultProxy(None, lambda key, seen: fault, reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy)
    assert reply.text is None and reply.retry
    assert "malformed reply" in reply.error and "after 3 tries" in reply.error
    assert reply.usage["requests"] == 3  # every request sent is counted


def test_read_completion_names_what_is_wrong() -> None:
    with pytest.raises(client.MalformedReply, match="not JSON"):
        read_completion(b"<html>")
    with pytest.raises(client.MalformedReply, match="content is a list"):
        read_completion(json.dumps({"choices": [{"message": {"content": ["A"]}}]}).encode())
    with pytest.raises(client.Refused, match="no thanks"):
        read_completion(b'{"choices": [{"message": {"content": null, "refusal": "no thanks"}}]}')
    body = b'{"model": "m", "choices": [{"message": {"content": "B"}, "finish_reason": "stop"}]}'
    text, finish, model, usage = read_completion(body)
    assert (text, finish, model, usage) == ("B", "stop", "m", {})


def test_a_refusal_is_a_failure_that_says_so_and_is_not_retried() -> None:
    with FaultProxy(None, lambda key, seen: "refusal", reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy)
    assert reply.text is None and not reply.retry and reply.usage["requests"] == 1
    assert "refused to answer: I cannot help with medical images." in reply.error


def test_the_timeout_bounds_the_whole_request_body_included() -> None:
    with FaultProxy(None, lambda key, seen: "drip", slow_s=6.0, reply=lambda text: "A") as proxy:
        started = time.monotonic()
        (reply,) = _ask(proxy, request_timeout=1.0, max_retries=1)
        took = time.monotonic() - started
    assert reply.text is None and "no complete answer" in reply.error and "within 1 s" in reply.error
    assert took < 5  # two attempts of 1 s (and a short backoff), not two of the 6 s the body takes


def test_a_reply_over_the_size_cap_is_a_failure_and_memory_stays_bounded() -> None:
    with FaultProxy(None, lambda key, seen: "huge", reply=lambda text: "A") as proxy:
        tracemalloc.start()
        (reply,) = _ask(proxy, max_reply_bytes=100_000)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert reply.text is None and not reply.retry and "over 100000 bytes (--max-reply-bytes)" in reply.error
    assert peak < 3_000_000  # the 5 MB body was never held whole


def test_another_model_name_is_warned_of_once_and_recorded(caplog: pytest.LogCaptureFixture) -> None:
    first = in_order("other-model")
    with FaultProxy(None, first, reply=lambda t: "A") as proxy:
        chat = ChatClient("m", ClientOptions(base_url=proxy.base_url, api_key_env="TEST_KEY"))
        replies = list(chat.stream((i, [{"role": "user", "content": f"q{i}"}], 8) for i in range(4)))
    assert all(reply.text == "A" for reply in replies)
    assert chat.describe()["served_models"] == ["another-model-v2", "m"]  # every name it answered as
    assert caplog.text.count("it answered as 'another-model-v2'") == 1


# --- secrets ------------------------------------------------------------------------------------------


def test_an_echoed_key_near_the_cut_never_reaches_a_message() -> None:
    with FaultProxy(None, lambda key, seen: "echo-key", reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy, max_retries=0)
    assert reply.error.startswith("HTTP 500") and KEY not in reply.error and KEY[:12] not in reply.error


def test_a_key_in_an_answer_is_scrubbed() -> None:
    with FaultProxy(None, lambda key, seen: "key-in-answer", reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy)
    assert reply.text == "The answer is A (your key is ***)"


def test_credentials_in_the_base_url_are_scrubbed_and_not_recorded() -> None:
    url = "http://user:hunter2pass@127.0.0.1:9/v1?token=tok-abc123"
    assert redact_url(url) == "http://***@127.0.0.1:9/v1?token=***"
    assert redact_url("http://u:p@[::1]:8000/v1") == "http://***@[::1]:8000/v1"
    secrets = Secrets("sk-xyz", url)
    assert secrets.scrub("hunter2pass and tok-abc123 and sk-xyz") == "*** and *** and ***"
    chat = ChatClient("m", ClientOptions(base_url=url, max_retries=0, request_timeout=2))
    described = json.dumps(chat.describe())
    assert "hunter2pass" not in described and "tok-abc123" not in described
    (reply,) = list(chat.stream([(0, MESSAGES, 8)]))  # nothing listens on port 9
    assert "hunter2pass" not in reply.error and "tok-abc123" not in reply.error


def test_a_run_records_and_logs_no_credential(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    with FaultProxy(None, in_order("key-in-answer"), reply=lambda t: "A") as proxy:
        url = proxy.base_url.replace("http://", "http://me:pw-SECRET-9@")
        config = RunConfig(
            model="m",
            backend="openai",
            output_dir=tmp_path / "out",
            data_dir=str(SAMPLE_DIR),
            limit=6,
            backend_options={"base_url": url, "api_key_env": "TEST_KEY", "max_retries": 1},
        )
        assert runner.run(config) == 0
    captured = capfd.readouterr()
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".md", ".csv"}:
            text = path.read_text(encoding="utf-8")
            assert all(secret not in text for secret in (KEY, "pw-SECRET-9", "tok-SECRET-8")), path
    assert all(secret not in captured.err + captured.out for secret in (KEY, "pw-SECRET-9", "tok-SECRET-8"))
    run = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert run["engine"]["base_url"].startswith("http://***@127.0.0.1:")


# --- refusing up front -------------------------------------------------------------------------------


def test_a_model_the_server_does_not_serve_is_refused_before_any_question(tmp_path: Path) -> None:
    with FaultProxy(None, reply=lambda text: "A", models=["served-a", "served-b"]) as proxy:
        config = RunConfig(
            model="not-served",
            backend="openai",
            output_dir=tmp_path / "out",
            data_dir=str(SAMPLE_DIR),
            backend_options={"base_url": proxy.base_url},
        )
        with pytest.raises(ValueError, match=r"does not serve 'not-served'; it lists: served-a, served-b"):
            runner.run(config)
        assert not proxy.log  # nothing was sent
    assert not (tmp_path / "out").exists()


def test_a_400_is_not_retried_and_says_what_to_change() -> None:
    with FaultProxy(None, lambda key, seen: "400", reply=lambda text: "A") as proxy:
        (reply,) = _ask(proxy)
    assert reply.usage["requests"] == 1 and not reply.retry
    assert "HTTP 400" in reply.error and "retrying will not help" in reply.error
