"""GGUF files of real model shapes with random weights, for speed benchmarks (bench/cpu.py): no model hub needed.

    path = qwen05b_shaped_gguf()     # Qwen2.5-0.5B's shapes as a Llama GGUF: Q4_0 matrices, Q8_0 embedding

Qwen2.5-0.5B: 24 layers, hidden 896, 14 query / 2 key-value heads of 64, FFN 4864, vocabulary 151,936, tied
embedding. Written as ``llama`` (the architecture the compiler has), so the q/k/v biases of Qwen2 are left out; they
are 1,152 additions per layer beside ~15 M multiply-adds, nothing a speed comparison sees. The tokenizer is the
built-in SmolLM2 GGUF's (llama.cpp accepts its pre-tokenizer) padded with unused tokens to the real vocabulary, so
both llama.cpp and the compiler read the file. Weights: PyPI ``gguf``'s own quantizer on N(0, 0.02) values (norms
1), seeded, so the file is the same on every machine; cached under ``cache_dir()/bench/``.

    folder = hf_shape_folder(QWEN2_05B_HF)   # Qwen2-0.5B-Instruct's public config.json, random BF16 safetensors
    folder = hf_shape_folder(LLAMA32_1B_HF)  # Llama-3.2-1B's (llama3 RoPE scaling, factor 32)

Hugging Face folders for ``webllm-widget build --hf`` (bench/gpu_device.py's real-GPU shapes): the model's own
config.json (public), ``model.safetensors`` with seeded N(0, 0.02) BF16 matrices (norms 1, biases N(0, 0.02)),
written tensor by tensor, and the built-in SmolLM2's tokenizer.json with its ChatML chat template (the ids it
makes are below either vocabulary; the speed of a step does not depend on which ids come in).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

QWEN05B = {"name": "Qwen2.5-0.5B-shape", "layers": 24, "hidden": 896, "heads": 14, "kv_heads": 2, "head_dim": 64,
           "ffn": 4864, "vocab": 151936, "rope_theta": 1000000.0, "eps": 1e-6, "context": 32768}
VERSION = "1"

#: Qwen2-0.5B-Instruct's config.json (the public one, less its torch/transformers bookkeeping).
QWEN2_05B_HF = {"_name": "Qwen2-0.5B-shape", "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "rope_theta": 1000000.0,
                "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "hidden_act": "silu",
                "bos_token_id": 151643, "eos_token_id": 151645}
#: Llama-3.2-1B's config.json (public): 16 layers, hidden 2048, 32/8 heads of 64, FFN 8192, tied, llama3 RoPE.
LLAMA32_1B_HF = {"_name": "Llama-3.2-1B-shape", "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                 "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
                 "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
                 "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                 "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                 "bos_token_id": 128000, "eos_token_id": 128009}


def hf_tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of a Llama/Qwen2 config (tied: no lm_head)."""
    h, ffn, hd = c["hidden_size"], c["intermediate_size"], c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    bias = c.get("attention_bias", c["model_type"] == "qwen2")
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "self_attn.q_proj.weight"] = (q, h)
        out[p + "self_attn.k_proj.weight"] = (kv, h)
        out[p + "self_attn.v_proj.weight"] = (kv, h)
        if bias:
            out[p + "self_attn.q_proj.bias"] = (q,)
            out[p + "self_attn.k_proj.bias"] = (kv,)
            out[p + "self_attn.v_proj.bias"] = (kv,)
        out[p + "self_attn.o_proj.weight"] = (h, q)
        out[p + "post_attention_layernorm.weight"] = (h,)
        out[p + "mlp.gate_proj.weight"] = (ffn, h)
        out[p + "mlp.up_proj.weight"] = (ffn, h)
        out[p + "mlp.down_proj.weight"] = (h, ffn)
    out["model.norm.weight"] = (h,)
    if not c.get("tie_word_embeddings"):
        out["lm_head.weight"] = (c["vocab_size"], h)
    return out


def hf_shape_folder(config: dict, out: Path | None = None) -> Path:
    """Write (once) and return a Hugging Face folder of ``config``'s shapes with random weights (module docstring)."""
    import json
    import shutil
    import struct

    from webllm_widget import models
    from webllm_widget.cache import cache_dir

    name = config["_name"]
    folder = Path(out) if out else cache_dir() / "bench" / f"hf-{name.lower()}-v{VERSION}"
    if (folder / "model.safetensors").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "_name"}, indent=1))
    builtin = models.default()  # the built-in SmolLM2 folder: its tokenizer.json; its GGUF: the chat template
    shutil.copyfile(builtin / "tokenizer.json", tmp / "tokenizer.json")
    import gguf

    src = gguf.GGUFReader(str(models.default_gguf(progress=False)))
    tpl = bytes(src.fields["tokenizer.chat_template"].parts[-1]).decode("utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps({"chat_template": tpl}))
    shapes = hf_tensor_shapes(config)
    header, off = {}, 0
    for n, shp in shapes.items():
        nb = int(np.prod(shp)) * 2
        header[n] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + nb]}
        off += nb
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    rng = np.random.default_rng(0)
    with open(tmp / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for n, shp in shapes.items():
            if n.endswith("norm.weight"):
                f.write(np.full(shp, 0x3F80, "<u2").tobytes())  # 1.0 in BF16
                continue
            rows = shp[0]
            step = max(1, (1 << 24) // max(1, int(np.prod(shp[1:]))))
            for r in range(0, rows, step):
                part = rng.standard_normal((min(step, rows - r), *shp[1:]), dtype=np.float32) * np.float32(0.02)
                f.write((part.view("<u4") >> 16).astype("<u2").tobytes())
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def qwen05b_shaped_gguf(out: Path | None = None, matrix_type: str = "Q4_0") -> Path:
    """Write (once) and return a random-weight GGUF of Qwen2.5-0.5B's shapes (see the module docstring)."""
    import gguf

    from webllm_widget import models
    from webllm_widget.cache import atomic_write_bytes, cache_dir

    s = QWEN05B
    path = Path(out) if out else cache_dir() / "bench" / f"qwen2.5-0.5b-shape-{matrix_type.lower()}-v{VERSION}.gguf"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    src = gguf.GGUFReader(str(models.default_gguf(progress=False)))
    tmp = path.with_suffix(".writing")
    wr = gguf.GGUFWriter(str(tmp), "llama")
    wr.add_name(s["name"])
    wr.add_block_count(s["layers"])
    wr.add_context_length(s["context"])
    wr.add_embedding_length(s["hidden"])
    wr.add_feed_forward_length(s["ffn"])
    wr.add_head_count(s["heads"])
    wr.add_head_count_kv(s["kv_heads"])
    wr.add_rope_freq_base(s["rope_theta"])
    wr.add_layer_norm_rms_eps(s["eps"])
    wr.add_vocab_size(s["vocab"])
    wr.add_rope_dimension_count(s["head_dim"])

    def field(name):
        return src.fields[name]

    tokens = [bytes(field("tokenizer.ggml.tokens").parts[i]).decode("utf-8")
              for i in field("tokenizer.ggml.tokens").data]
    types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data]
    merges = [bytes(field("tokenizer.ggml.merges").parts[i]).decode("utf-8")
              for i in field("tokenizer.ggml.merges").data]
    pad = s["vocab"] - len(tokens)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre(bytes(field("tokenizer.ggml.pre").parts[-1]).decode("utf-8"))
    wr.add_token_list(tokens + [f"<unused_{i}>" for i in range(pad)])
    wr.add_token_types(types + [int(gguf.TokenType.UNUSED)] * pad)
    wr.add_token_merges(merges)
    for key, add in (("tokenizer.ggml.bos_token_id", wr.add_bos_token_id),
                     ("tokenizer.ggml.eos_token_id", wr.add_eos_token_id)):
        if key in src.fields:
            add(int(field(key).parts[-1][0]))
    if "tokenizer.chat_template" in src.fields:
        wr.add_chat_template(bytes(field("tokenizer.chat_template").parts[-1]).decode("utf-8"))

    rng = np.random.default_rng(0)
    qtype = getattr(gguf.GGMLQuantizationType, matrix_type)

    def matrix(name: str, rows: int, cols: int, kind=qtype) -> None:
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        wr.add_tensor(name, gguf.quants.quantize(w, kind), raw_dtype=kind)

    h, hd = s["hidden"], s["head_dim"]
    matrix("token_embd.weight", s["vocab"], h, gguf.GGMLQuantizationType.Q8_0)
    for i in range(s["layers"]):
        p = f"blk.{i}."
        wr.add_tensor(p + "attn_norm.weight", np.ones(h, np.float32))
        matrix(p + "attn_q.weight", s["heads"] * hd, h)
        matrix(p + "attn_k.weight", s["kv_heads"] * hd, h)
        matrix(p + "attn_v.weight", s["kv_heads"] * hd, h)
        matrix(p + "attn_output.weight", h, s["heads"] * hd)
        wr.add_tensor(p + "ffn_norm.weight", np.ones(h, np.float32))
        matrix(p + "ffn_gate.weight", s["ffn"], h)
        matrix(p + "ffn_up.weight", s["ffn"], h)
        matrix(p + "ffn_down.weight", h, s["ffn"])
    wr.add_tensor("output_norm.weight", np.ones(h, np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return path


if __name__ == "__main__":
    print(qwen05b_shaped_gguf())
