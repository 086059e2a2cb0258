"""The built-in model's hardware-GPU library with another slice length of the split decode attention, for an A/B
in one GPU call (``bench/gpu_device.py prepare --lib-variant NAME=FILE``).

    python bench/attention_slice_lib.py 256 /tmp/smollm2-slice256.wasm       # slices of 256 positions
    python bench/attention_slice_lib.py 1048576 /tmp/smollm2-noslice.wasm   # one slice whatever the context

``schedules.decode_attention_gpu(slice_positions=N)`` (default ``schedules.SLICE_POSITIONS``, 64) replaces the KV cache's
decode kernel as the library is built. The build runs in its own cache folder (``$WEBLLM_WIDGET_CACHE``, the
compiler's runtime and sources linked from the usual one), since the cache keys see the compiler's sources, not
this argument.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str]) -> int:
    n, out = int(argv[0]), Path(argv[1])
    from webllm_widget.cache import cache_dir

    usual = cache_dir()
    mine = Path(tempfile.mkdtemp(prefix=f"wlw-slice{n}-"))
    for entry in usual.iterdir():  # everything but the built models and libraries
        if entry.name not in ("models", "model-libs", "libs", "locks"):
            os.symlink(entry, mine / entry.name)
    os.environ["WEBLLM_WIDGET_CACHE"] = str(mine)
    from webllm_widget.compile import schedules
    from webllm_widget.models.devices import model_spec

    schedules.decode_attention_gpu = functools.partial(schedules.decode_attention_gpu, slice_positions=n)
    spec, paths = model_spec(None, "webgpu")
    lib = next(f for f in spec["files"] if f["name"] == spec.get("lib", "model.wasm"))
    shutil.copyfile(paths[lib["sha256"]], out)
    print(f"{out}: {spec['id']} with decode attention slices of {n} positions")
    shutil.rmtree(mine, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
