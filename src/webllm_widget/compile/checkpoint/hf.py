"""A Hugging Face model folder as a checkpoint: ``config.json`` read through the family's config keys, tensors
memory-mapped out of ``*.safetensors`` (the header is parsed here: it is a length and a JSON object, and
reading it directly keeps the checks for truncated files in one place)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ...errors import BadModel
from ..arch import registry
from .base import Checkpoint, Tensor

_ST_DTYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16"}


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadModel(f"{path}: truncated safetensors file (no header). Download the model again.")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 << 20):
            raise BadModel(f"{path}: corrupt safetensors header (length {n}). Download the model again.")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise BadModel(f"{path}: corrupt safetensors header ({e}). Download the model again.") from e
    base = 8 + n
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if base + end > size:
        raise BadModel(f"{path}: safetensors file is truncated ({size} bytes, tensors need {base + end}). "
                       "Download the model again.")
    return header, base


class HFCheckpoint(Checkpoint):
    """A Hugging Face model folder: ``config.json`` and one or more ``*.safetensors`` files."""

    kind = "hf"

    def __init__(self, folder: Path):
        self.path = Path(folder)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise BadModel(f"{self.path}: no config.json. Pass a Hugging Face model folder "
                           "(config.json, tokenizer.json, *.safetensors) or a .gguf file.")
        try:
            hf = json.loads(cfg_path.read_text())
        except ValueError as e:
            raise BadModel(f"{cfg_path}: not valid JSON ({e}). Download the model again.") from e
        archs = hf.get("architectures") or [hf.get("model_type", "?")]
        family, model_type = registry.family_for_hf(str(archs[0]), cfg_path)
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise BadModel(f"{self.path}: no *.safetensors files. Download the safetensors weights "
                           "(PyTorch .bin files are not read).")
        self._where: dict[str, tuple[Path, dict, int]] = {}
        for fpath in files:
            header, base = _read_safetensors_header(fpath)
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                if info["dtype"] not in _ST_DTYPES:
                    raise BadModel(f"{fpath}: tensor {name} has dtype {info['dtype']}; only F32/F16/BF16 are read.")
                if name.endswith("rotary_emb.inv_freq"):
                    continue
                self._where[name] = (fpath, info, base)
        self.config = family.config_module.from_hf(hf, model_type, set(self._where), self.path.name,
                                                   where=str(cfg_path))
        tie = self.config["tie_word_embeddings"]
        if tie:
            self._where.pop("lm_head.weight", None)

    def tensor_names(self) -> list[str]:
        return list(self._where)

    def get(self, hf_name: str) -> Tensor:
        fpath, info, base = self._where[hf_name]
        start, stop = info["data_offsets"]
        shape = tuple(int(s) for s in info["shape"])

        def raw() -> np.ndarray:
            mm = np.memmap(fpath, dtype=np.uint8, mode="r", offset=base + start, shape=(stop - start,))
            return mm

        return Tensor(hf_name, shape, _ST_DTYPES[info["dtype"]], raw)
