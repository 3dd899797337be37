"""One background event loop that runs the async SDK for its sync twin."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar


T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _get_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="stockade-sdk", daemon=True).start()
        return _loop


def call(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the SDK's loop and wait for its result."""
    loop = _get_loop()
    if threading.current_thread().name == "stockade-sdk":
        raise RuntimeError(
            "the sync SDK cannot be called from one of its own callbacks; use AsyncSandbox there"
        )
    coroutine: Any = fn(*args, **kwargs)
    result: T = asyncio.run_coroutine_threadsafe(coroutine, loop).result()
    return result


def iterate(source: AsyncIterator[T]) -> Iterator[T]:
    """Turn an async iterator living on the SDK's loop into a sync one."""
    while True:
        try:
            yield call(anext, source)
        except StopAsyncIteration:
            return
