"""A model's hardware-GPU library with other parameters of ``schedules.LaneGemv`` (the one-token matrix products),
for an A/B in one GPU call (``bench/gpu_device.py prepare --shape-lib-variant SHAPE:NAME=FILE``, or
``--lib-variant NAME=FILE`` for the built-in model).

    python bench/lane_gemv_lib.py llama3.2-1b lanes=64,groups=4 /tmp/l1b-lanes64.wasm
    python bench/lane_gemv_lib.py llama3.2-1b rows=2,min_groups=512 /tmp/l1b-rows2.wasm
    python bench/lane_gemv_lib.py builtin unroll=8 /tmp/smollm2-unroll8.wasm

Parameters: ``groups``, ``lanes``, ``rows``, ``unroll``, ``words`` (LaneGemv's constructor) and ``min_groups``
(``schedules._MIN_GROUPS``, the workgroups a product aims to launch at least). The build runs in its own cache
folder (``$WEBLLM_WIDGET_CACHE``, the compiler's runtime and sources linked from the usual one), since the cache
keys see the compiler's sources, not these arguments.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import copy_builtin_webgpu_library, private_cache  # noqa: E402


def main(argv: list[str]) -> int:
    model, params, out = argv[0], argv[1], Path(argv[2])
    kv = {k: int(v) for k, v in (item.split("=", 1) for item in params.split(",") if item)}
    unknown = set(kv) - {"groups", "lanes", "rows", "unroll", "words", "min_groups"}
    if unknown:
        raise SystemExit(f"unknown LaneGemv parameter(s) {sorted(unknown)}: use groups, lanes, rows, unroll, words, min_groups")
    with private_cache("wlw-lanegemv-"):
        from webllm_widget.compile import schedules

        if "min_groups" in kv:
            schedules._MIN_GROUPS = kv.pop("min_groups")
        base = schedules.LaneGemv

        class Variant(base):
            def __init__(self, **given):
                super().__init__(**{**given, **kv})

        schedules.LaneGemv = Variant
        if model == "builtin":
            name = copy_builtin_webgpu_library(out)
        else:
            import gpu_device
            import shapes
            from webllm_widget.compile.pipeline import build_model_folder

            folder = build_model_folder(shapes.hf_shape_folder(getattr(shapes, gpu_device.SHAPES[model])),
                                        quantization="q4f32_1")
            shutil.copyfile(folder / "model.wasm", out)
            name = folder.name
    print(f"{out}: {name} with LaneGemv {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
