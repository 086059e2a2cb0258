"""Batch prompting: each prompt answered in a fresh conversation of its own, one after another, with a progress
bar in the kernel (tqdm) and in the widget, stoppable; one record per prompt.

    records = await chat.batch(["Name a colour.", "Name a fruit."], temperature=0, max_tokens=16)
    import pandas as pd; pd.DataFrame(records)

A record: ``{"prompt", "answer", "finish_reason", "usage": {prompt_tokens, completion_tokens, total_tokens},
"timings": {prefill_tokens_per_s, decode_tokens_per_s, time_to_first_token_s, e2e_latency_s}, "error"}``.
``finish_reason`` is the model's (``stop``, ``length``), ``abort`` for the answer that ``chat.stop()`` (or the
widget's Stop) ended, ``not-run`` for the prompts after it, ``error`` where that prompt failed (``error`` then holds
its ``code`` and ``message``; the batch goes on).
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterable

from ..errors import WebLLMWidgetError
from .messages import clean_text, conversation
from .openai_format import TIMING_KEYS, openai_usage

#: Errors of one prompt that do not stop the batch (the prompt itself is at fault).
PER_PROMPT_ERRORS = ("context-overflow",)


def prompt_list(prompts: Iterable[Any]) -> list[str]:
    """``prompts`` (a list, tuple, pandas Series or any iterable of strings) as a list of strings."""
    if isinstance(prompts, (str, bytes)):
        raise TypeError("batch() takes a list of prompts (or a pandas column), not one string: "
                        "use chat.ask(prompt) for one, or pass [prompt]")
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, not a string: {p!r}")
        out.append(clean_text(p))
    return out


def record(prompt: str, answer: str | None, result: dict | None, finish_reason: str | None,
           error: dict | None = None) -> dict:
    u = (result or {}).get("usage") or {}
    return {
        "prompt": prompt,
        "answer": answer,
        "finish_reason": finish_reason,
        "usage": openai_usage(u),
        "timings": {k: u.get(k) for k in TIMING_KEYS},
        "error": error,
    }


class Batch:
    """One running batch of a chat; ``stop()`` ends it (the answer in flight keeps its text so far)."""

    def __init__(self, chat: Any, prompts: list[str], system_prompt: str, settings: dict, progress: bool):
        self.chat, self.prompts, self.system_prompt, self.settings = chat, prompts, system_prompt, settings
        self.progress = progress
        self.stopped = False
        self.current: Any = None

    def stop(self) -> None:
        self.stopped = True
        if self.current is not None:
            self.current.stop()

    async def run(self) -> list[dict]:
        from tqdm.auto import tqdm

        chat, total = self.chat, len(self.prompts)
        records: list[dict] = []
        bar = tqdm(total=total, desc="batch", unit="prompt", disable=not self.progress)
        chat.batch_progress = {"done": 0, "total": total}
        try:
            for p in self.prompts:
                if self.stopped:
                    records.append(record(p, None, None, "not-run"))
                    continue
                h = chat._answers.submit(p, conversation(self.system_prompt, [], p), self.settings, record=False)
                self.current = h
                try:
                    text = await h
                except WebLLMWidgetError as e:
                    if e.code not in PER_PROMPT_ERRORS:
                        raise
                    records.append(record(p, None, None, "error", {"code": e.code, "message": str(e.args[0])}))
                else:
                    reason = (h.result or {}).get("finish_reason")
                    records.append(record(p, text, h.result, reason))
                    if reason == "abort":
                        self.stopped = True  # the widget's Stop, or chat.stop(), ended this answer
                finally:
                    self.current = None
                bar.update(1)
                chat.batch_progress = {"done": len(records), "total": total}
        except asyncio.CancelledError:  # the cell was interrupted: end the answer in flight too
            if self.current is not None:
                self.current.stop()
            raise
        finally:
            bar.close()
            chat.batch_progress = {}
        return records
