"""Write ``mlc-chat-config.json``: web-llm's chat settings (JSON conversation template, stop tokens, sampling).

web-llm 0.2.85 does not run Jinja chat templates; it builds prompts from a JSON ``conv_template``
(``system_template``, ``roles``, ``seps``, ``role_content_sep``, ``role_empty_sep``, ``stop_str``,
``stop_token_ids``, ``system_prefix_token_ids``). :func:`conv_template_from_jinja` recognises the
template families the supported checkpoints use (ChatML: SmolLM2, Qwen2.5, Qwen3; Llama 3; Phi-3; Gemma; Zephyr-style:
TinyLlama) and carries over the default system prompt written inside the Jinja text.

For SmolLM2 the prompt web-llm builds is exactly what its Jinja template renders::

    <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n
    <|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n<|im_start|>assistant\\n
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["conv_template_from_jinja", "chat_config", "write_chat_config", "render_prompt", "DEFAULT_SAMPLING"]

#: Sampling defaults written into the config (web-llm uses them unless a request overrides them).
#: SmolLM2's model card recommends a low temperature and top_p 0.9.
DEFAULT_SAMPLING = {"temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.0,
                    "presence_penalty": 0.0, "frequency_penalty": 0.0}


def _ids(tokens: dict[str, int], *names: str) -> list[int]:
    return [tokens[n] for n in names if n in tokens]


def _jinja_literal_text(template: str) -> str:
    # GGUF/HF templates hold "\n" both as real newlines and as escapes inside string literals
    return template.replace("\\n", "\n")


def _turns(name: str, *, system_template: str, system_message: str, user: str, assistant: str, sep: str,
           stop: str, prefix_ids: list[int], stop_ids: list[int], content_sep: str = "\n",
           add_role_after_system_message: bool = True) -> dict[str, Any]:
    """A ``conv_template`` whose turns are ``<role><content_sep><text><sep>``, tool turns written as user turns."""
    return {
        "name": name,
        "system_template": system_template,
        "system_message": system_message,
        "roles": {"user": user, "assistant": assistant, "tool": user},
        "role_templates": {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"},
        "seps": [sep],
        "role_content_sep": content_sep,
        "role_empty_sep": content_sep,
        "stop_str": [stop],
        "system_prefix_token_ids": prefix_ids,
        "stop_token_ids": stop_ids,
        "add_role_after_system_message": add_role_after_system_message,
    }


def conv_template_from_jinja(template: str | None, tokens: dict[str, int]) -> dict[str, Any]:
    """web-llm's JSON ``conv_template`` for a Jinja chat template.

    ``tokens`` maps special-token text to id (e.g. ``{"<|im_end|>": 2}``); it gives ``stop_token_ids``.
    """
    text = _jinja_literal_text(template or "")
    if "<|im_start|>" in text or ("<|im_start|>" in tokens and not text):
        # the default system prompt: a literal system turn (not one built from messages[0]['content'])
        literal = (m.group(1) for m in re.finditer(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S))
        system = next((t for t in literal if not any(c in t for c in "{}'\"+")), "")
        return _turns("chatml", system_template="<|im_start|>system\n{system_message}<|im_end|>\n",
                      system_message=system, user="<|im_start|>user", assistant="<|im_start|>assistant",
                      sep="<|im_end|>\n", stop="<|im_end|>", prefix_ids=[],
                      stop_ids=_ids(tokens, "<|im_end|>", "<|endoftext|>"))
    if "<|start_header_id|>" in text:
        return _turns("llama-3",
                      system_template="<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>",
                      system_message="You are a helpful, respectful and honest assistant.",
                      user="<|start_header_id|>user", assistant="<|start_header_id|>assistant", sep="<|eot_id|>",
                      stop="<|eot_id|>", prefix_ids=_ids(tokens, "<|begin_of_text|>"),
                      stop_ids=_ids(tokens, "<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"),
                      content_sep="<|end_header_id|>\n\n")
    if "<start_of_turn>" in text and re.search(r"raise_exception\([^)]*[Ss]ystem role", text):
        # Gemma 2: the template refuses a system message. No system part, so a conversation without one is exactly
        # the template's; system_role false tells the page's engines to open the first user turn with the system
        # text and a blank line (js/src/engine/cpu/template.ts, foldSystemMessage), as Gemma 3's template does.
        conv = _turns("gemma", system_template="", system_message="", user="<start_of_turn>user",
                      assistant="<start_of_turn>model", sep="<end_of_turn>\n", stop="<end_of_turn>",
                      prefix_ids=_ids(tokens, "<bos>"), stop_ids=_ids(tokens, "<end_of_turn>", "<eos>"))
        return {**conv, "system_role": False}
    if "<start_of_turn>" in text:
        # Gemma: no system turn; Gemma 3's template puts the system text, then a blank line, at the start of the
        # first user turn, which web-llm writes as a system template followed by the first message without its role.
        # With no system message web-llm still writes this template's empty form ("<start_of_turn>user\n\n\n").
        return _turns("gemma", system_template="<start_of_turn>user\n{system_message}\n\n", system_message="",
                      user="<start_of_turn>user", assistant="<start_of_turn>model", sep="<end_of_turn>\n",
                      stop="<end_of_turn>", prefix_ids=_ids(tokens, "<bos>"),
                      stop_ids=_ids(tokens, "<end_of_turn>", "<eos>"), add_role_after_system_message=False)
    if "<|user|>" in text and "<|end|>" in text:
        # Phi-3 / Phi-3.5: every turn ends with <|end|>\n; some versions start with the BOS token
        return _turns("phi-3", system_template="<|system|>\n{system_message}<|end|>\n", system_message="",
                      user="<|user|>", assistant="<|assistant|>", sep="<|end|>\n", stop="<|end|>",
                      prefix_ids=_ids(tokens, "<s>") if "bos_token" in text else [],
                      stop_ids=_ids(tokens, "<|end|>", "<|endoftext|>"))
    if "<|user|>" in text and "<|assistant|>" in text:
        return _turns("zephyr", system_template="<|system|>\n{system_message}</s>\n",
                      system_message="You are a helpful chatbot.", user="<|user|>", assistant="<|assistant|>",
                      sep="</s>\n", stop="</s>", prefix_ids=_ids(tokens, "<s>"), stop_ids=_ids(tokens, "</s>"))
    # No recognisable template: a plain "User:/Assistant:" transcript still lets a base model continue.
    eos = [i for n, i in tokens.items() if n in ("</s>", "<|endoftext|>", "<|end_of_text|>")]
    return {
        "name": "plain",
        "system_template": "{system_message}",
        "system_message": "",
        "roles": {"user": "User", "assistant": "Assistant", "tool": "User"},
        "seps": ["\n"],
        "role_content_sep": ": ",
        "role_empty_sep": ":",
        "stop_str": ["\nUser:"],
        "system_prefix_token_ids": [],
        "stop_token_ids": eos,
        "add_role_after_system_message": True,
    }


def render_prompt(conv: dict, messages: list[tuple[str, str]], system: str | None = None) -> str:
    """The text web-llm's Conversation.getPromptArray builds, joined (for tests and the numpy reference).

    ``messages`` is ``[(role, text), …]``; a trailing assistant turn with text ``None`` is the reply header.
    """
    return "".join(prompt_pieces(conv, messages, system))


def prompt_pieces(conv: dict, messages: list[tuple[str, str]], system: str | None = None) -> list[str]:
    """The pieces web-llm's Conversation.getPromptArray builds (its engine encodes each piece on its own and puts
    ``system_prefix_token_ids`` before them). Arguments as :func:`render_prompt`."""
    if conv.get("system_role") is False and system:  # the engines' fold (foldSystemMessage in template.ts)
        first = next(i for i, (role, _) in enumerate(messages) if role == "user")
        messages = [(r, f"{system}\n\n{t}" if i == first else t) for i, (r, t) in enumerate(messages)]
        system = ""
    sysmsg = conv["system_message"] if system is None else system
    out = [conv["system_template"].replace("{system_message}", sysmsg)] if conv["system_template"] else []
    if out == [""]:
        out = []
    has_system = bool(out)
    seps = conv["seps"]
    for i, (role, text) in enumerate(messages):
        role_str = conv["roles"][role]
        if text is None:
            out.append(role_str + conv.get("role_empty_sep", ": "))
            continue
        tmpl = (conv.get("role_templates") or {}).get(role)
        body = tmpl.replace("{" + f"{role}_message" + "}", text) if tmpl else text
        prefix = role_str + conv.get("role_content_sep", ": ")
        if conv.get("add_role_after_system_message") is False and has_system and i == 0:
            prefix = ""  # the first message continues the system template (Gemma's first user turn)
        out.append(prefix + body + seps[i % len(seps)])
    return out


def chat_config(*, model_type: str, quantization: str, vocab_size: int, context_window_size: int,
                prefill_chunk_size: int, conv_template: dict, tokenizer_files: list[str],
                bos_token_id: int | None = None, eos_token_ids: list[int] | None = None,
                pad_token_id: int = 0, model_config: dict | None = None,
                sampling: dict | None = None, tokenizer_info: dict | None = None) -> dict[str, Any]:
    """The ``mlc-chat-config.json`` document (``tokenizer_info``: from :func:`.tokenizer.tokenizer_info`)."""
    doc: dict[str, Any] = {
        "version": "0.1.0",
        "model_type": model_type,
        "quantization": quantization,
        "model_config": model_config or {},
        "vocab_size": int(vocab_size),
        "context_window_size": int(context_window_size),
        "sliding_window_size": -1,
        "prefill_chunk_size": int(prefill_chunk_size),
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        **(sampling or DEFAULT_SAMPLING),
        "tokenizer_files": list(tokenizer_files),
        "tokenizer_info": tokenizer_info or {"token_postproc_method": "byte_level", "prepend_space_in_encode": False,
                                             "strip_space_in_decode": False},
        "conv_template": conv_template,
        "pad_token_id": int(pad_token_id),
        "eos_token_id": list(eos_token_ids or conv_template.get("stop_token_ids", [])),
    }
    if bos_token_id is not None:
        doc["bos_token_id"] = int(bos_token_id)
    return doc


def write_chat_config(folder: str | os.PathLike, doc: dict) -> Path:
    path = Path(folder) / "mlc-chat-config.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    return path


def tool_use_template_of(ckpt) -> str | None:
    """The checkpoint's template for requests with tools, where it names one apart from its default (``tool_use``:
    Hermes 2 Pro and Hermes 3 carry one beside a plain ChatML ``default``; GGUF ``tokenizer.chat_template.tool_use``),
    else None."""
    if ckpt.kind == "gguf":
        return ckpt.metadata("tokenizer.chat_template.tool_use")
    cfg = Path(ckpt.path) / "tokenizer_config.json"
    if cfg.exists():
        t = json.loads(cfg.read_text()).get("chat_template")
        if isinstance(t, list):
            return next((x.get("template") for x in t if x.get("name") == "tool_use"), None)
    return None


def chat_template_of(ckpt) -> str | None:
    """The Jinja chat template a checkpoint carries (GGUF metadata or HF ``tokenizer_config.json``)."""
    if ckpt.kind == "gguf":
        return ckpt.metadata("tokenizer.chat_template")
    cfg = Path(ckpt.path) / "tokenizer_config.json"
    if cfg.exists():
        t = json.loads(cfg.read_text()).get("chat_template")
        if isinstance(t, list):  # some configs hold several named templates
            t = next((x.get("template") for x in t if x.get("name") == "default"), None)
        return t
    return None
