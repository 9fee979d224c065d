"""VLMEvalKit's LLM judge, for the answers exact matching cannot read, without its random letter.

When ``can_infer`` finds nothing in a model's answer (``False``; a refusal's ``'Z'`` is final),
VLMEvalKit (``vlmeval/dataset/utils/multiple_choice.py`` ``extract_answer_from_item``, the same
at 69268c70, 2024-08-19, and today) asks a judge model which option the answer means: the prompt
of ``build_prompt`` (``build_prompt_cn`` when the question holds a CJK ideograph), with the
option string of ``build_option_str``, temperature 0; the reply is read with ``can_infer``; a
reply it cannot read (or an API failure) is one failed try; after 3 failed tries VLMEvalKit
draws **a random letter**. Here such a question stays unmatched and is counted as
``judge_failed``: a number never rests on a coin toss.

Any OpenAI-compatible endpoint can judge (OpenAI's API, or a local ``vllm serve`` of an open
model), through :class:`gmai_hf.client.ChatClient` (its retries, concurrency, accounting).
Verdicts are cached on disk, each under a hash of the exact prompt, the judge model, its endpoint
and the reply matcher, so a rerun of the same scoring makes no calls; a verdict that rested on failed
requests is not cached. A cached verdict is trusted only as far as its replies go: its letter is
read again from the stored replies with the question's options and must agree (an edited letter, or
one that is no option of the question, is asked again); a cache file that cannot be read is set
aside (``<file>.corrupt-<time>``) with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmai_hf import matching
from gmai_hf.client import ChatClient, ClientOptions, redact_url
from gmai_hf.files import write_atomic

logger = logging.getLogger(__name__)

#: ``build_prompt``'s template, character for character ("Your should" and the "?" after the
#: question included: a question ending in "?" gets two).
JUDGE_TEMPLATE = (
    "You are an AI assistant who will help me to match "
    "an answer with several options of a single-choice question. "
    "You are provided with a question, several options, and an answer, "
    "and you need to find which option is most similar to the answer. "
    "If the meaning of all options are significantly different from the answer, output Z. "
    "Your should output a single uppercase character in A, B, C, D (if they are valid options), and Z. \n"
    "Example 1: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: a cute teddy bear\nYour output: A\n"
    "Example 2: \n"
    "Question: What is the main object in image?\nOptions: A. teddy bear B. rabbit C. cat D. dog\n"
    "Answer: Spider\nYour output: Z\n"
    "Example 3: \n"
    "Question: {}?\nOptions: {}\nAnswer: {}\nYour output: "
)

#: ``build_prompt_cn``'s template, for questions with Chinese characters.
JUDGE_TEMPLATE_CN = (
    "你是一个帮助我匹配答案与单选题中多个选项的 AI 助手。"
    "你会被提供：一个问题，多个选项，一个答案。你的任务是找到与答案意义最相近的选项。"
    "如果所有选项的意义都与答案显著不同，则输出 Z。"
    "你应该输出一个单个的大写字母，例如 A, B, C, D（如果它们是有效选项），或 Z。"
    "例 1:"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 一只可爱的泰迪熊\n输出: A\n"
    "例 2: \n"
    "问题: 图中最主要的物体是什么?\n选项: A. 泰迪熊 B. 兔子 C. 猫 D. 狗\n答案: 蜘蛛\n输出: Z\n"
    "例 3: \n"
    "问题: {}?\n选项: {}\n答案: {}\n输出: "
)

#: The judge prompt's identity in results: sha256 of the English template.
PROMPT_SHA256 = hashlib.sha256(JUDGE_TEMPLATE.encode()).hexdigest()
#: Tries per question (VLMEvalKit's ``retry = 3``).
TRIES = 3
#: The judge's generation limit (VLMEvalKit's judges allow 2,048 tokens today).
MAX_TOKENS = 2048

_CJK = re.compile("[\u4e00-\u9fff]")


def option_string(choices: Mapping[str, str | None]) -> str:
    """``build_option_str``: ``'There are several options: \\n'`` then ``'A. text\\n'`` per present option."""
    return "There are several options: \n" + "".join(
        f"{letter}. {text}\n" for letter, text in choices.items()
    )


def judge_prompt(question: str, choices: Mapping[str, str | None], prediction: str) -> str:
    """The prompt VLMEvalKit sends its judge for one answer."""
    template = JUDGE_TEMPLATE_CN if _CJK.search(question) else JUDGE_TEMPLATE
    return template.format(question, option_string(choices), prediction)


@dataclass
class Verdict:
    """The judge's reading of one answer: ``letter`` (a present letter or ``'Z'``) or None (failed)."""

    letter: str | None
    replies: list[str] = field(default_factory=list)
    cached: bool = False


@dataclass
class _Pending:
    position: int
    prompt: str
    choices: dict[str, str | None]
    key: str
    replies: list[str] = field(default_factory=list)
    errors: int = 0


def judge_settings(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A judge as a run's settings name it: model and endpoint (never the key)."""
    if not options:
        return None
    from gmai_hf.client import resolve_base_url

    return {"model": options["model"], "base_url": redact_url(resolve_base_url(options.get("base_url")))}


def _failed(reply: str) -> bool:
    return reply.startswith(matching.API_FAILURE)


def _valid_entry(entry: Any) -> dict[str, Any] | None:
    """``entry`` if it has the shape of a cached verdict, None for a verdict of the earlier format
    (keyed by the prompt alone: asked again); ``ValueError`` saying what is wrong otherwise."""
    if isinstance(entry, dict) and "key" not in entry and "prompt_sha256" in entry:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or len(entry["key"]) != 64:
        raise ValueError("not a verdict (no 64-character key)")
    replies = entry.get("replies")
    if not isinstance(replies, list) or not all(isinstance(reply, str) for reply in replies):
        raise ValueError("the replies are not a list of texts")
    if entry.get("letter") is not None and not isinstance(entry["letter"], str):
        raise ValueError(f"the letter {entry['letter']!r} is not a text")
    return {"key": entry["key"], "letter": entry.get("letter"), "replies": replies}


def default_cache_dir() -> Path:
    """``$HF_HOME/gmai_hf/judge`` (``GMAI_HF_JUDGE_CACHE`` overrides it)."""
    from huggingface_hub import constants

    return Path(os.environ.get("GMAI_HF_JUDGE_CACHE") or Path(constants.HF_HOME) / "gmai_hf" / "judge")


class Judge:
    """An OpenAI-compatible model reading the answers exact matching could not."""

    def __init__(
        self,
        model: str,
        options: ClientOptions | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        matching_mode: str = matching.DEFAULT_MATCHING,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        self.client = ChatClient(model, options, seed=None, what="judge")
        self.max_tokens = max_tokens
        # VLMEvalKit reads its judge's reply with the can_infer of its time
        self.reply_mode = "vlmevalkit-2024" if matching_mode == "vlmevalkit-2024" else "vlmevalkit"
        # a verdict is the reply as read in reply_mode: one cache per endpoint, model and mode
        endpoint = f"{self.client.endpoint}\n{model}\n{self.reply_mode}"
        identity = hashlib.sha256(endpoint.encode()).hexdigest()[:12]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", model)[-60:]
        self.cache_path = Path(cache_dir or default_cache_dir()) / f"{name}-{identity}.jsonl"
        self._cache = self._load_cache()
        self.calls = self.cached = self.decided = self.failed = self.invalid = 0
        self.usage: dict[str, int] = {}
        self._checked = False

    @classmethod
    def from_options(cls, judge: Judge | str | Mapping[str, Any] | None, **defaults: Any) -> Judge | None:
        """A judge from what a user passes: a :class:`Judge`, a model name, or a dict of options
        (``model``, :class:`ClientOptions` fields, and this class's keyword arguments)."""
        if judge is None or isinstance(judge, Judge):
            return judge
        if isinstance(judge, str):
            return cls(judge, **defaults)
        options = {**defaults, **judge}
        model = options.pop("model")
        client = {key: options.pop(key) for key in list(options) if key in ClientOptions.__dataclass_fields__}
        return cls(model, ClientOptions.from_mapping(client), **options)

    def _entry_key(self, prompt: str) -> str:
        """A verdict's key: the exact prompt, the judge model, its endpoint and the reply matcher."""
        identity = "\n".join((self.client.endpoint, self.client.model, self.reply_mode, prompt))
        return hashlib.sha256(identity.encode()).hexdigest()

    def _load_cache(self) -> dict[str, dict[str, Any]]:
        """The verdicts in the cache file; a file with unreadable lines is set aside, its good ones kept."""
        self._cut_at: int | None = None  # where a last line cut by a kill starts
        try:
            data = self.cache_path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as error:
            logger.warning(
                "cannot read the judge cache %s (%s): its verdicts are asked again", self.cache_path, error
            )
            return {}
        cache: dict[str, dict[str, Any]] = {}
        lines = data.split(b"\n")
        problem = None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = _valid_entry(json.loads(line))
            except ValueError as error:  # UnicodeDecodeError and JSONDecodeError too
                if number == len(lines):  # a last line cut by a kill: that verdict is asked again
                    self._cut_at = len(data) - len(line)
                    continue
                problem = problem or f"line {number}: {error}"
                continue
            if entry is not None:
                cache[entry["key"]] = entry
        if problem is not None:
            self._set_aside(problem, cache)
        return cache

    def _set_aside(self, problem: str, cache: Mapping[str, Mapping[str, Any]]) -> None:
        """Move an unreadable cache file out of the way; its readable verdicts start a new one."""
        aside = self.cache_path.with_name(f"{self.cache_path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.cache_path, aside)
            write_atomic(self.cache_path, "".join(json.dumps(entry) + "\n" for entry in cache.values()))
        except OSError as error:
            logger.warning(
                "the judge cache %s is unreadable (%s) and cannot be set aside (%s): delete it",
                self.cache_path,
                problem,
                error,
            )
            return
        self._cut_at = None
        logger.warning(
            "the judge cache %s is unreadable (%s): set aside as %s; its %d readable verdict(s) are kept, "
            "the others are asked again",
            self.cache_path,
            problem,
            aside.name,
            len(cache),
        )

    def _cached_verdict(self, key: str, choices: Mapping[str, str | None]) -> Verdict | None:
        """The cached verdict for ``key`` if its letter is what its stored replies say for these options."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        replies = entry["replies"]
        read = [matching.infer_choices(reply, choices, self.reply_mode) for reply in replies]
        letter = next((str(value) for value in read if value), None)
        complete = letter is not None or (len(replies) >= TRIES and not any(_failed(r) for r in replies))
        if not complete or letter != entry["letter"]:
            self.invalid += 1
            return None
        return Verdict(letter, list(replies), cached=True)

    def _remember(self, pending: _Pending, letter: str | None) -> None:
        entry = {"key": pending.key, "letter": letter, "replies": pending.replies}
        self._cache[pending.key] = entry
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            if self._cut_at is not None:  # the next verdict starts where the cut line did
                os.truncate(self.cache_path, self._cut_at)
                self._cut_at = None
            with self.cache_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
        except OSError as error:  # a read-only cache: verdicts are asked again next time
            logger.warning("could not cache the judge's verdict in %s: %s", self.cache_path, error)

    def decide(self, items: Sequence[tuple[str, Mapping[str, str | None], str]]) -> list[Verdict]:
        """Verdicts for ``(question, present options, prediction)`` triples, in order.

        Up to :data:`TRIES` rounds: every undecided answer is asked once per round, all of them
        concurrently; a cached verdict is taken when its stored replies still read as its letter.
        """
        verdicts: list[Verdict | None] = [None] * len(items)
        pending: list[_Pending] = []
        invalid = self.invalid
        for position, (question, choices, prediction) in enumerate(items):
            prompt = judge_prompt(question, choices, prediction)
            key = self._entry_key(prompt)
            verdicts[position] = self._cached_verdict(key, choices)
            if verdicts[position] is not None:
                self.cached += 1
            else:
                pending.append(_Pending(position, prompt, dict(choices), key))
        if self.invalid > invalid:
            logger.warning(
                "%d verdict(s) in the judge cache %s disagree with their own stored replies or the "
                "question's options (edited?): asked again",
                self.invalid - invalid,
                self.cache_path,
            )
        if pending and not self._checked:
            self.client.check()
            self._checked = True
        for _ in range(TRIES):
            if not pending:
                break
            requests = (
                (item, [{"role": "user", "content": item.prompt}], self.max_tokens) for item in pending
            )
            undecided = []
            for reply in self.client.stream(requests):
                item = reply.key
                self.calls += 1
                for name, value in reply.usage.items():
                    self.usage[name] = self.usage.get(name, 0) + value
                if reply.error is not None:
                    item.errors += 1
                    item.replies.append(f"{matching.API_FAILURE}: {reply.error}")
                    undecided.append(item)
                    continue
                text = reply.text or ""
                item.replies.append(text)
                letter = matching.infer_choices(text, item.choices, self.reply_mode)
                if letter:
                    verdicts[item.position] = Verdict(str(letter), item.replies)
                    self._remember(item, str(letter))
                else:
                    undecided.append(item)
            pending = undecided
        for item in pending:  # every try failed: no letter, and never a random one
            verdicts[item.position] = Verdict(None, item.replies)
            if not item.errors:  # a judge that answered, unreadably: the same next time
                self._remember(item, None)
        done = [verdict for verdict in verdicts if verdict is not None]
        self.decided += sum(verdict.letter is not None for verdict in done)
        self.failed += sum(verdict.letter is None for verdict in done)
        return done

    def describe(self) -> dict[str, Any]:
        """What results.json records of the judge (never the key)."""
        return {
            "model": self.client.model,
            "served_models": sorted(self.client.served_models),
            "base_url": self.client.endpoint,
            "prompt_sha256": PROMPT_SHA256,
            "tries": TRIES,
            "calls": self.calls,
            "cached": self.cached,
            "cache_invalid": self.invalid,
            "decided": self.decided,
            "failed": self.failed,
            "usage": self.usage or None,
            "cache": str(self.cache_path),
        }
