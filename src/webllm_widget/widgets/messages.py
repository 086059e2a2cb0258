"""Chat messages as they travel to the page: text made safe for Jupyter's UTF-8 transport, the
conversation sent with a question, and the conversation as Markdown (the page's export writes the same text)."""
from __future__ import annotations


def clean_text(text: str) -> str:
    """``text`` with lone UTF-16 surrogates replaced by U+FFFD: Jupyter encodes every message as UTF-8, where a
    lone surrogate (pasted from a broken source, or sliced mid-emoji) raises and the message is lost."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_messages(messages: list) -> list:
    """``messages`` with each string ``content`` passed through :func:`clean_text` (anything else as given)."""
    return [dict(m, content=clean_text(m["content"])) if isinstance(m, dict) and isinstance(m.get("content"), str)
            else m for m in messages]


def conversation(system_prompt: str, messages: list[dict], prompt: str) -> list[dict]:
    """What the model is asked with: the system prompt (if any), the earlier user and assistant turns of
    ``messages`` (their system messages left out) and ``prompt`` as the last user message."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs += [{"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"]
    msgs.append({"role": "user", "content": prompt})
    return msgs


_ROLE_TITLE = {"system": "System", "user": "User", "assistant": "Assistant"}


def to_markdown(system_prompt: str, messages: list[dict]) -> str:
    """One ``## Role`` section per message, the system prompt first when set; the same text as the widget's
    "Export .md" (js/src/ui/export.ts)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    msgs += [m for m in messages if m.get("role") != "system"]
    return "\n".join(f"## {_ROLE_TITLE.get(m['role'], m['role'])}\n\n{m['content']}\n" for m in msgs)
