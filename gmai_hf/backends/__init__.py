"""Model engines behind one narrow interface (:class:`Backend`); see ``base.py``."""

from __future__ import annotations

from typing import Any

from gmai_hf.backends.base import Answer, Backend, Failed, Prepared, Question, QuestionError

__all__ = [
    "BACKENDS",
    "Answer",
    "Backend",
    "Failed",
    "Prepared",
    "Question",
    "QuestionError",
    "backend_for",
    "load_backend",
]

#: ``--backend`` choices: transformers in-process, any OpenAI-compatible server, the random baseline.
BACKENDS: tuple[str, ...] = ("transformers", "openai", "random")

#: ``--model`` value of the built-in uniform-guess baseline (any case).
RANDOM_MODEL = "random"


def backend_for(backend: str, model: str) -> str:
    """The backend a run uses: ``--model random`` (any case) is the random baseline whatever
    ``--backend`` says, since no model of that name is meant."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown --backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return "random" if model.lower() == RANDOM_MODEL else backend


def load_backend(
    backend: str,
    model: str,
    device: Any = "cpu",
    *,
    dtype: str = "auto",
    seed: int = 0,
    trust_remote_code: bool = False,
    options: dict[str, Any] | None = None,
    device_map: str | None = None,
    gpus_per_process: int | None = None,
) -> Backend:
    """The engine for ``--backend`` / ``--model`` (see :func:`backend_for`)."""
    backend = backend_for(backend, model)
    if backend == "random":
        from gmai_hf.backends.random import RandomBackend

        return RandomBackend(seed=seed)
    if backend == "openai":
        from gmai_hf.backends.openai import OpenAIBackend
        from gmai_hf.client import ClientOptions

        client = dict(options or {})
        max_image_side = client.pop("max_image_side", None)
        options_ = ClientOptions.from_mapping(client)
        return OpenAIBackend(model, options_, seed=seed, max_image_side=max_image_side)
    from gmai_hf.backends.hf import HFBackend

    return HFBackend(
        model,
        device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        device_map=device_map,
        gpus_per_process=gpus_per_process,
    )
