"""A llama.cpp GGUF file as a checkpoint: the family's GGUF name map and config keys, tensors memory-mapped.

PyPI ``gguf``'s reader parses the header; which family the file holds, how its tensors are named and which
metadata keys carry the config are the family's (``arch/<family>/loader.py`` and ``config.py``). A loader may
also name tensors that hold config rather than weights (``GGUF_CONFIG_TENSORS``: Llama 3's ``rope_freqs``,
Phi-3's LongRoPE factors), handed to its config reader, and tensors whose stored values are offset from the HF
convention (``GGUF_SHIFTED``: llama.cpp stores Gemma's ``(1 + w)`` norm weights as ``1 + w``), shifted back here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BadModel
from ..arch import registry
from ..quant.ggml import BLOCK_BYTES
from .base import _WHAT_TO_DO_GGUF, Checkpoint, Tensor


def _gguf_to_hf(loader: Any, name: str) -> str | None:
    for pat, fmt in loader.GGUF_NAMES:
        m = pat.match(name)
        if m:
            return fmt.format(*m.groups())
    return None


class GGUFCheckpoint(Checkpoint):
    """A llama.cpp GGUF file. q/k rows are un-permuted back to HF order where the converter permuted them."""

    kind = "gguf"

    def __init__(self, path: Path):
        self.path = Path(path)
        import gguf

        size = self.path.stat().st_size
        try:
            reader = gguf.GGUFReader(str(self.path), "r")
        except Exception as e:  # the reader raises ValueError/IndexError/struct errors on bad headers
            raise BadModel(f"{self.path}: cannot read this GGUF file: it is truncated or corrupt ({size} bytes; "
                           f"{type(e).__name__}: {e}). {_WHAT_TO_DO_GGUF}", detail={"file": str(self.path)}) from e
        self._reader = reader
        fields = reader.fields

        def get(key: str, default: Any = None) -> Any:
            f = fields.get(key)
            if f is None:
                return default
            try:
                return f.contents()
            except Exception as e:
                raise BadModel(f"{self.path}: metadata field '{key}' is unreadable ({e}). {_WHAT_TO_DO_GGUF}") from e

        self._get = get
        arch_raw = get("general.architecture")
        if not isinstance(arch_raw, str):
            raise BadModel(f"{self.path}: GGUF has no 'general.architecture'. {_WHAT_TO_DO_GGUF}")
        family, model_type = registry.family_for_gguf(arch_raw, self.path)
        loader = family.loader

        # Every tensor must lie inside the file: a truncated download fails here, before any work.
        end = 0
        for t in reader.tensors:
            end = max(end, int(t.data_offset) + int(t.n_bytes))
            ttype = t.tensor_type.name
            if ttype not in BLOCK_BYTES:
                raise BadModel(f"{self.path}: tensor {t.name} has type {ttype}, which webllm-widget cannot read "
                               f"(supported: {', '.join(BLOCK_BYTES)}). Use a GGUF of one of those types (e.g. Q4_K_M, Q8_0).")
        if end > size:
            raise BadModel(f"{self.path}: file is truncated ({size} bytes, tensors need {end}). {_WHAT_TO_DO_GGUF}",
                           detail={"file": str(self.path), "size": size, "needed": end})

        self._tensors: dict[str, Any] = {}
        for t in reader.tensors:
            hf = _gguf_to_hf(loader, t.name)
            if hf is None:
                if loader.GGUF_SKIP.match(t.name):
                    continue
                for pat, why in getattr(loader, "GGUF_REFUSE", ()):
                    if pat.match(t.name):
                        raise BadModel(f"{self.path}: tensor '{t.name}' {why}.", detail={"tensor": t.name})
                raise BadModel(f"{self.path}: unexpected tensor '{t.name}' for a {arch_raw} model. "
                               "Is this a Llama-family GGUF?")
            self._tensors[hf] = t
        emb = self._tensors.get("model.embed_tokens.weight")
        if emb is None:
            raise BadModel(f"{self.path}: no token_embd.weight tensor. {_WHAT_TO_DO_GGUF}")
        wanted = getattr(loader, "GGUF_CONFIG_TENSORS", ("rope_freqs.weight",))
        config_tensors = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors
                          if t.name in wanted}
        self.config = family.config_module.from_gguf(
            get, arch_raw, model_type, set(self._tensors), int(emb.shape[-1]), get("general.name") or self.path.stem,
            keys=list(fields), where=str(self.path), rope_freqs=config_tensors.get("rope_freqs.weight"),
            config_tensors=config_tensors)
        self._permute = arch_raw in loader.GGUF_PERMUTED_QK
        self._shifted = getattr(loader, "GGUF_SHIFTED", None)

    def metadata(self, key: str, default: Any = None) -> Any:
        """A GGUF metadata value (e.g. ``tokenizer.ggml.tokens``), decoded to Python values."""
        return self._get(key, default)

    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def get(self, hf_name: str) -> Tensor:
        t = self._tensors[hf_name]
        ttype = t.tensor_type.name
        shape = tuple(int(x) for x in reversed([int(s) for s in t.shape]))  # ggml [in, out] -> HF [out, in]
        heads = None
        if self._permute and hf_name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            heads = self.config["num_attention_heads"]
        elif self._permute and hf_name.endswith(("self_attn.k_proj.weight", "self_attn.k_proj.bias")):
            heads = self.config["num_key_value_heads"]

        def raw(t=t, shape=shape, heads=heads) -> np.ndarray:
            data = np.asarray(t.data).view(np.uint8)
            if heads is None:
                return data.reshape(-1)
            rows = data.reshape(shape[0], -1)
            # the converter did rows.reshape(h, 2, d/2, ...).swapaxes(1, 2); undo it. Whole rows move,
            # so quantized blocks (which run along the input dim) stay intact.
            d = shape[0] // heads
            rows = rows.reshape(heads, d // 2, 2, rows.shape[-1]).swapaxes(1, 2)
            return np.ascontiguousarray(rows).reshape(-1)

        shift = 0.0
        if self._shifted is not None and self._shifted[0].match(hf_name):
            shift = -float(self._shifted[1])
        return Tensor(hf_name, shape, ttype, raw, shift=shift)
