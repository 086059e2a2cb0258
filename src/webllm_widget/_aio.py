"""Run a coroutine to completion from synchronous code, whatever loop the calling thread already runs.

Playwright's sync API (used by the test harness) leaves an event loop marked as running in the main
thread, and Jupyter kernels run one too; ``asyncio.run`` refuses both. Here the coroutine then gets a
fresh loop in a worker thread instead.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Coroutine, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wlw-aio") as pool:
        return pool.submit(asyncio.run, coro).result()
