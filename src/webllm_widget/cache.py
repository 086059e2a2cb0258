"""Where the project keeps what it builds: one user cache dir, entries keyed by version or content hash."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator


def cache_dir() -> Path:
    """The root cache dir: ``$WEBLLM_WIDGET_CACHE`` or the platform's user cache dir."""
    env = os.environ.get("WEBLLM_WIDGET_CACHE")
    if env:
        root = Path(env)
    else:
        try:
            import platformdirs

            root = Path(platformdirs.user_cache_dir("webllm-widget"))
        except ImportError:  # pragma: no cover
            root = Path.home() / ".cache" / "webllm-widget"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sources_digest(root: Path, names: tuple[str, ...]) -> str:
    """sha256 of the source files ``names`` under ``root`` (a folder stands for its ``*.py`` files), with their paths.

    Builds key their cache entries on the code that shapes them, so editing that code never reuses a stale entry.
    """
    h = hashlib.sha256()
    for name in names:
        p = root / name
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + (f.read_bytes() if f.exists() else b""))
    return h.hexdigest()


#: (entry name, seconds) of every wait for another process's build in this process, for callers that report them
LOCK_WAITS: list[tuple[str, float]] = []


@contextlib.contextmanager
def build_lock(name: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock ``cache_dir()/locks/<name>.lock`` for a build of the cache entry ``name``.

    Two processes building the same entry (two notebooks, or a test run and its background prebuild) would
    otherwise both do the work, and the second's rename would replace a folder the first is reading. A caller
    checks the cache again once it holds the lock: the other process may have finished the entry meanwhile.
    ``on_wait`` is called with a sentence when the lock is held elsewhere, before waiting for it and after (by
    default the sentence goes to stderr, so a wait is never silent). The lock is an
    OS file lock (``fcntl.flock``; ``msvcrt.locking`` on Windows): a process that dies releases it.
    """
    if on_wait is None:
        def on_wait(text: str) -> None:
            print(f"webllm-widget: {text}", file=sys.stderr, flush=True)
    path = cache_dir() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if sys.platform == "win32":  # pragma: no cover
            import msvcrt

            def take(block: bool) -> bool:
                while True:  # LK_LOCK gives up after ~10 s: wait by polling instead
                    try:
                        f.seek(0)
                        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
                        return True
                    except OSError:
                        if not block:
                            return False
                        time.sleep(0.2)

            def release() -> None:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            def take(block: bool) -> bool:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
                    return True
                except BlockingIOError:
                    return False

            def release() -> None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

        if not take(block=False):
            t0 = time.perf_counter()
            on_wait(f"another process is building {name}; waiting for it")
            take(block=True)
            LOCK_WAITS.append((name, time.perf_counter() - t0))
            on_wait(f"waited {LOCK_WAITS[-1][1]:.1f} s for {name}")
        try:
            yield
        finally:
            release()


@contextlib.contextmanager
def atomic_dir(final: Path):
    """Build a directory in a temp sibling and move it into place only if the block succeeds.

    Nothing half-written is ever left at ``final``: a failure removes the temp dir.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
