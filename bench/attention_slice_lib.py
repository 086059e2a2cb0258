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
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import copy_builtin_webgpu_library, private_cache  # noqa: E402


def main(argv: list[str]) -> int:
    n, out = int(argv[0]), Path(argv[1])
    with private_cache(f"wlw-slice{n}-"):
        from webllm_widget.compile import schedules

        schedules.decode_attention_gpu = functools.partial(schedules.decode_attention_gpu, slice_positions=n)
        name = copy_builtin_webgpu_library(out)
    print(f"{out}: {name} with decode attention slices of {n} positions")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
