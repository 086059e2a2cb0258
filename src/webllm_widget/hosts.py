"""Which notebook front end this kernel serves, and what its message model allows while a cell runs.

JupyterLab, Notebook 7 (and VS Code, Colab) deliver a widget's messages to the kernel while a cell awaits, so
``await chat.ask(...)`` works there. marimo holds every message from the page until the running cell ends,
even while the cell awaits (measured: docs/hosts.md), so awaiting the page inside a marimo cell would never
end. There :func:`refuse_await` raises :class:`~webllm_widget.errors.HostHoldsMessages` at once, naming what
works instead: ``chat.send(prompt, on_done=...)`` returns at once and the answer arrives after the cell ends;
wrapping the widget as ``w = mo.ui.anywidget(chat)`` makes every cell that reads ``w.value`` run again when
the page finishes an answer (the page writes the ``answered`` count, which marimo treats as a change).

Messages the kernel sends before the page listens are dropped by marimo; the page's ``ready`` message and
the kernel's queue until then (``protocol.Channel``) make every host behave alike there.
"""
from __future__ import annotations

import sys

from .errors import HostHoldsMessages

__all__ = ["in_marimo", "refuse_await", "MARIMO_HINT"]

MARIMO_HINT = ("marimo delivers the page's messages to Python only after the running cell ends, so this cell "
               "would wait forever. Use chat.send(prompt, on_done=...) (it returns at once; the answer arrives "
               "after the cell ends), or show the chat as w = mo.ui.anywidget(chat) and read w.value['messages'] "
               "in another cell: marimo runs that cell again each time an answer is done.")


def in_marimo() -> bool:
    """Whether this code runs inside a marimo notebook's kernel (``marimo edit`` / ``marimo run``)."""
    mo = sys.modules.get("marimo")
    if mo is None:
        return False
    try:
        return bool(mo.running_in_notebook())
    except Exception:  # an older or partial marimo: no notebook runtime to speak of
        return False


def refuse_await(what: str) -> None:
    """Raise :class:`HostHoldsMessages` when ``what`` (a wait on the page) is awaited where it could never end."""
    if in_marimo():
        raise HostHoldsMessages(f"{what}: {MARIMO_HINT}", detail={"host": "marimo"})
