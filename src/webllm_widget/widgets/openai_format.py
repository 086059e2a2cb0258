"""OpenAI chat-completion shapes for :meth:`Chat.complete`: the request's messages checked and cleaned, and
the page's answer written as a ``chat.completion`` object."""
from __future__ import annotations

import time

from .messages import clean_messages

#: Keys of the ``usage`` object (integers; 0 when the page did not count them).
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
#: Speed numbers copied from the page's usage into ``timings`` (None when absent).
TIMING_KEYS = ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s", "e2e_latency_s")


def request_messages(messages: list[dict]) -> list[dict]:
    """``messages`` reduced to ``role`` and ``content`` and cleaned; raises ValueError unless the last one is
    the user's (that is the question answered)."""
    msgs = clean_messages([{"role": m["role"], "content": m["content"]} for m in messages])
    if not msgs or msgs[-1]["role"] != "user":
        raise ValueError("messages must end with a user message")
    return msgs


def chat_completion(answer_id: str, model: str, text: str, result: dict | None) -> dict:
    """The ``chat.completion`` object of one answer: ``text`` with the ``finish_reason`` and ``usage`` of the
    page's ``result``, under the id ``chatcmpl-<answer_id>``."""
    r = result or {}
    u = r.get("usage") or {}
    return {
        "id": f"chatcmpl-{answer_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": r.get("finish_reason")}],
        "usage": {k: int(u.get(k) or 0) for k in USAGE_KEYS},
        "timings": {k: u.get(k) for k in TIMING_KEYS},
    }
