"""The registry of model families: which family builds a checkpoint, its config class, model class and name maps.

A family is one sub-package of ``compile/arch`` (``config.py``, ``model.py``, ``loader.py``). The checkpoint
readers ask :func:`family_for_hf` / :func:`family_for_gguf` which family a file holds; the exporter asks
:func:`family_of` for the model class of a config. Adding a family means adding its folder and one
:class:`Family` row here.

Example::

    from webllm_widget.compile.arch import registry
    cfg = registry.config_from_dict(checkpoint.config)
    model = registry.family_of(cfg).model(cfg)
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from types import ModuleType
from typing import Any

from ...errors import BadModel
from .gemma2 import config as gemma2_config
from .gemma2 import loader as gemma2_loader
from .gemma3 import config as gemma3_config
from .gemma3 import loader as gemma3_loader
from .llama import config as llama_config
from .llama import loader as llama_loader
from .phi3 import config as phi3_config
from .phi3 import loader as phi3_loader
from .qwen3 import config as qwen3_config
from .qwen3 import loader as qwen3_loader


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family and how checkpoints name it."""

    name: str
    #: config's ``architecture`` values (model types) this family builds
    model_types: tuple[str, ...]
    #: HF ``architectures[0]`` or ``model_type``, lowercased -> model type
    hf_names: dict[str, str]
    #: GGUF ``general.architecture`` -> model type
    gguf_names: dict[str, str]
    config_module: ModuleType
    loader: ModuleType
    config_class: type
    #: dotted path of the model module (imported on use: it needs TVM)
    model_module: str
    model_class: str

    def model(self, cfg: Any) -> Any:
        """A fresh ``nn.Module`` of this family for ``cfg``."""
        return getattr(self._model_module(), self.model_class)(cfg)

    def _model_module(self) -> ModuleType:
        import importlib

        return importlib.import_module(self.model_module, __package__)

    def kv_cache_dims(self, cfg: Any) -> dict[str, int]:
        """The KV cache block that ``_metadata`` declares."""
        return self._model_module().kv_cache_dims(cfg)

    def kv_cache_rope(self, cfg: Any) -> dict[str, Any]:
        """RoPE arguments of the paged KV cache: ``rope_scale``, ``rope_scaling``, ``rope_ext_factors``."""
        return self._model_module().kv_cache_rope(cfg)


FAMILIES: tuple[Family, ...] = (
    Family(
        name="llama", model_types=llama_config.MODEL_TYPES,
        hf_names={"llamaforcausallm": "llama", "llama": "llama", "mistralforcausallm": "llama",
                  "qwen2forcausallm": "qwen2", "qwen2": "qwen2"},
        gguf_names={"llama": "llama", "qwen2": "qwen2"},
        config_module=llama_config, loader=llama_loader, config_class=llama_config.LlamaConfig,
        model_module=".llama.model", model_class="LlamaForCausalLM"),
    Family(
        name="qwen3", model_types=qwen3_config.MODEL_TYPES,
        hf_names={"qwen3forcausallm": "qwen3", "qwen3": "qwen3"}, gguf_names={"qwen3": "qwen3"},
        config_module=qwen3_config, loader=qwen3_loader, config_class=qwen3_config.Qwen3Config,
        model_module=".qwen3.model", model_class="Qwen3ForCausalLM"),
    Family(
        name="phi3", model_types=phi3_config.MODEL_TYPES,
        hf_names={"phi3forcausallm": "phi3", "phi3": "phi3"}, gguf_names={"phi3": "phi3"},
        config_module=phi3_config, loader=phi3_loader, config_class=phi3_config.Phi3Config,
        model_module=".phi3.model", model_class="Phi3ForCausalLM"),
    Family(
        name="gemma2", model_types=gemma2_config.MODEL_TYPES,
        hf_names={"gemma2forcausallm": "gemma2", "gemma2": "gemma2"}, gguf_names={"gemma2": "gemma2"},
        config_module=gemma2_config, loader=gemma2_loader, config_class=gemma2_config.Gemma2Config,
        model_module=".gemma2.model", model_class="Gemma2ForCausalLM"),
    Family(
        name="gemma3", model_types=gemma3_config.MODEL_TYPES,
        hf_names={"gemma3forcausallm": "gemma3_text", "gemma3_text": "gemma3_text"},
        gguf_names={"gemma3": "gemma3_text"},
        config_module=gemma3_config, loader=gemma3_loader, config_class=gemma3_config.Gemma3Config,
        model_module=".gemma3.model", model_class="Gemma3ForCausalLM"),
)

#: Model types the GGUF and HF readers accept, in the order error messages list them.
SUPPORTED_ARCHITECTURES = tuple(dict.fromkeys(t for f in FAMILIES for t in f.hf_names.values()))


#: Families recognised but not built, with what they need that is not implemented (the error says so).
REFUSED = {
    "gemma": "Gemma needs a (1 + w) RMSNorm, an embedding scaled by sqrt(hidden) and a GeGLU-tanh MLP",
    "gemma3": "the multimodal Gemma 3 (Gemma3ForConditionalGeneration: a vision tower and a nested text_config) is "
              "not read; the text model (Gemma3ForCausalLM, or a gemma3 GGUF) is",
}
_REFUSED_NAMES = {"gemmaforcausallm": "gemma", "gemma3forconditionalgeneration": "gemma3", "gemma": "gemma",
                  "gemma3": "gemma3"}


def _refused(arch: str, where: Path | str) -> BadModel | None:
    kind = _REFUSED_NAMES.get(arch.lower())
    if kind is None:
        return None
    return BadModel(f"{where}: {arch} is not supported yet: {REFUSED[kind]}, which webllm-widget does not "
                    f"implement; it refuses the model rather than run it wrong. Supported: "
                    f"{', '.join(SUPPORTED_ARCHITECTURES)}.", detail={"architecture": arch})


def _unsupported(arch: str, where: Path | str) -> BadModel:
    refused = _refused(arch, where)
    if refused is not None:
        return refused
    return BadModel(
        f"{where}: architecture '{arch}' is not supported. webllm-widget compiles Llama-family models "
        f"({', '.join(SUPPORTED_ARCHITECTURES)}: e.g. SmolLM2, TinyLlama, Llama 3.x, Mistral, Qwen2.5, Qwen3). "
        "Pick a checkpoint of one of these architectures.")


def family_for_hf(arch: str, where: Path | str) -> tuple[Family, str]:
    """(family, model type) of an HF ``architectures[0]`` (or ``model_type``); BadModel naming ``where`` if none."""
    a = arch.lower()
    for fam in FAMILIES:
        if a in fam.hf_names:
            return fam, fam.hf_names[a]
    raise _unsupported(arch, where)


def family_for_gguf(arch: str, where: Path | str) -> tuple[Family, str]:
    """(family, model type) of a GGUF ``general.architecture``; BadModel naming ``where`` if none."""
    a = arch.lower()
    for fam in FAMILIES:
        if a in fam.gguf_names:
            return fam, fam.gguf_names[a]
    raise _unsupported(arch, where)


def family_of(cfg: Any) -> Family:
    """The family of a config object, a config dict or a model type name."""
    if isinstance(cfg, str):
        kind = cfg
    elif isinstance(cfg, dict):
        kind = str(cfg.get("architecture") or cfg.get("model_type") or "llama")
    else:
        kind = cfg.model_type
    kind = kind.lower()
    for fam in FAMILIES:
        if kind in fam.model_types:
            return fam
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise BadModel(f"architecture {kind!r} is not a model family webllm-widget builds; supported: {known}.",
                   detail={"architecture": kind})


def config_from_dict(cfg: dict[str, Any] | Any, **overrides: Any) -> Any:
    """The family's config object for an HF-style dict (a config object is returned as it is)."""
    if not isinstance(cfg, dict):
        return cfg
    return family_of(cfg).config_class.from_dict(cfg, **overrides)
