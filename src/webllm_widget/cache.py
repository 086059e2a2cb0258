"""Where the project keeps what it builds: one user cache dir, entries keyed by version or content hash."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


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
