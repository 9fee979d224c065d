"""Model engines behind one narrow interface (:class:`Backend`); see ``base.py``."""

from __future__ import annotations

from typing import Any

from gmai_hf.backends.base import Backend, Prepared, Question, QuestionError

__all__ = ["Backend", "Prepared", "Question", "QuestionError", "load_backend"]

#: ``--model`` value of the built-in uniform-guess baseline.
RANDOM_MODEL = "random"


def load_backend(
    model: str,
    device: Any = "cpu",
    *,
    dtype: str = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
    reserved_tokens: int = 1,
) -> Backend:
    """The backend for ``--model``: ``random`` (no model loaded) or a transformers model id/path."""
    if model == RANDOM_MODEL:
        from gmai_hf.backends.random import RandomBackend

        return RandomBackend(seed=seed)
    from gmai_hf.backends.hf import HFBackend

    return HFBackend(
        model, device, dtype=dtype, trust_remote_code=trust_remote_code, reserved_tokens=reserved_tokens
    )
