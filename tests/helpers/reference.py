"""Independent numpy forward pass of a Llama-family decoder: the judge for compiled models.

Written from the maths (RMSNorm, rotate-half RoPE, grouped-query causal attention, optionally within a sliding
window on some or all layers (Mistral, Gemma), SwiGLU MLP,
tied or untied LM head, optional q/k/v bias, optional RMSNorm of every query and key head before RoPE as in
Qwen3), not from the compiler's code, so the two can disagree.
RoPE scaling follows the configs' ``rope_scaling``: ``linear`` (frequencies divided by the factor), ``llama3``
(Llama 3.1's three bands of wavelength: kept, divided, or blended in between) and ``longrope`` (Phi-3.5: each
frequency divided by its short factor, or its long one once the sequence passes the original context, and cos/sin
times sqrt(1 + ln(max / original) / ln(original))).

    ref = LlamaReference(weights, config)           # weights: {hf_name: float32 array [out, in]}
    logits = ref.forward([1, 2, 3])                 # (3, vocab); the KV cache keeps the 3 tokens
    logits = ref.forward([4])                       # (1, vocab), attends to all 4 positions
    ref.reset()

``activations=8`` rounds the input of every matrix product (projections and LM head) to 8-bit blocks first, as
integer-dot CPU kernels (llama.cpp's, the page's CPU path) do: per block of 32 values ``d = max|x| / 127`` and
``x -> d * round(x / d)`` (ties to even), products then taken on those values. ``16`` does the same with
``d = max|x| / 32767``; ``"int8x2"`` keeps, beside the 8-bit value ``q = round(v)`` (``v = x / d``), its rounding
residue as a second byte ``r = round((v - q) * 254)``: ``x -> d * (q + r / 254)``. A dict gives the form per product
(``"lm_head"`` or the weight's name, ``"*"`` the rest).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return x / np.sqrt(var + eps) * w


def rope_frequencies(head_dim: int, theta: float, scaling: Mapping | None = None, seq_len: int = 0) -> np.ndarray:
    """The d/2 rotation frequencies (radians per position), with the config's ``rope_scaling`` applied
    (``seq_len``: the sequence's length so far, which picks LongRoPE's factors)."""
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    kind = (scaling or {}).get("rope_type") or (scaling or {}).get("type") or "default"
    if kind == "default":
        return inv
    if kind in ("longrope", "su"):
        long = seq_len > int(scaling["original_max_position_embeddings"])
        return inv / np.asarray(scaling["long_factor" if long else "short_factor"], dtype=np.float64)
    if kind == "linear":
        return inv / float(scaling["factor"])
    if kind == "llama3":
        factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        out = np.empty_like(inv)
        for i, f in enumerate(inv):
            wavelength = 2 * np.pi / f
            if wavelength < old / high:      # short wavelengths: unchanged
                out[i] = f
            elif wavelength > old / low:     # long wavelengths: slowed down by the factor
                out[i] = f / factor
            else:                            # in between: a linear blend in old / wavelength
                t = (old / wavelength - low) / (high - low)
                out[i] = (1 - t) * f / factor + t * f
        return out
    raise ValueError(f"the reference has no RoPE scaling {kind!r}")


def rope_tables(positions: np.ndarray, head_dim: int, theta: float, dtype,
                scaling: Mapping | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables (len(positions), head_dim) for rotate-half RoPE: frequency i pairs dims i and i + d/2."""
    inv = rope_frequencies(head_dim, theta, scaling, int(positions.max()) + 1 if len(positions) else 0)  # (d/2,)
    ang = positions.astype(np.float64)[:, None] * inv[None, :]  # (T, d/2)
    ang = np.concatenate([ang, ang], axis=-1)
    gain = 1.0
    if scaling and (scaling.get("rope_type") or scaling.get("type")) in ("longrope", "su"):
        s = scaling["max_position_embeddings"] / scaling["original_max_position_embeddings"]
        gain = np.sqrt(1 + np.log(s) / np.log(scaling["original_max_position_embeddings"])) if s > 1 else 1.0
    return (gain * np.cos(ang)).astype(dtype), (gain * np.sin(ang)).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: (heads, T, d). rotate_half(x) = [-x2, x1]."""
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[None] + rot * sin[None]


def layer_windows(config: Mapping, n_layers: int) -> list[int | None]:
    """Each layer's attention window (a query sees itself and the ``window - 1`` positions before it), None for full
    attention: ``sliding_layers`` when the config names them, else HF's ``layer_types``, else Gemma 3's
    ``sliding_window_pattern`` (every pattern-th layer global), else every layer when ``sliding_window`` is set
    (Mistral; not when Qwen2's ``use_sliding_window`` is false)."""
    window = config.get("sliding_window")
    if not window or config.get("use_sliding_window") is False:
        return [None] * n_layers
    if config.get("sliding_layers") is not None:
        slide = set(config["sliding_layers"])
    elif config.get("layer_types"):
        slide = {i for i, kind in enumerate(config["layer_types"]) if kind == "sliding_attention"}
    elif config.get("sliding_window_pattern"):
        slide = {i for i in range(n_layers) if (i + 1) % int(config["sliding_window_pattern"])}
    else:
        slide = set(range(n_layers))
    return [int(window) if i in slide else None for i in range(n_layers)]


def attention_mask(start: int, T: int, S: int, window: int | None) -> np.ndarray:
    """(T, S) True where query ``start + t`` may not see key ``s``: a later key, or one ``window`` or more back."""
    q = (start + np.arange(T))[:, None]
    k = np.arange(S)[None, :]
    hidden = k > q
    if window:
        hidden |= q - k >= window
    return hidden


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


class LlamaReference:
    """Llama forward pass with an incremental KV cache, in float32 (default) or float64."""

    def __init__(self, weights: Mapping[str, np.ndarray], config: Mapping, dtype=np.float32,
                 activations: int | str | Mapping[str, int | str] | None = None):
        bits = activations.values() if isinstance(activations, Mapping) else [activations]
        if not all(b in (None, 8, 16, "int8x2") for b in bits):
            raise ValueError(f"activations={activations!r}: use None (float), 8 or 16 (bits per block of 32), "
                             "'int8x2', or a dict of those by product name")
        self.activations = activations
        self.cfg = dict(config)
        self.dtype = np.dtype(dtype)
        self.w = {k: np.asarray(v, dtype=self.dtype) for k, v in weights.items()}
        c = self.cfg
        self.n_layers = int(c["num_hidden_layers"])
        self.n_head = int(c["num_attention_heads"])
        self.n_kv = int(c.get("num_key_value_heads") or self.n_head)
        self.head_dim = int(c.get("head_dim") or c["hidden_size"] // self.n_head)
        self.eps = float(c["rms_norm_eps"])
        self.theta = float(c["rope_theta"])
        tied = c.get("tie_word_embeddings", False) or "lm_head.weight" not in self.w
        self.lm_head = self.w["model.embed_tokens.weight"] if tied else self.w["lm_head.weight"]
        self.windows = layer_windows(c, self.n_layers)
        self.reset()

    def reset(self) -> None:
        """Forget all cached keys/values (start a new sequence)."""
        shape = (self.n_kv, 0, self.head_dim)
        self.k_cache = [np.zeros(shape, self.dtype) for _ in range(self.n_layers)]
        self.v_cache = [np.zeros(shape, self.dtype) for _ in range(self.n_layers)]

    @property
    def pos(self) -> int:
        return self.k_cache[0].shape[1]

    def _blocks(self, x: np.ndarray, name: str) -> np.ndarray:
        """``x`` as the integer blocks of 32 the product ``name`` takes hold it (identity for float activations)."""
        a = self.activations
        bits = a.get(name, a.get("*")) if isinstance(a, Mapping) else a
        if bits is None:
            return x
        top = np.float32(32767 if bits == 16 else 127)
        g = np.asarray(x, np.float32).reshape(*x.shape[:-1], -1, 32)
        amax = np.abs(g).max(axis=-1, keepdims=True)
        safe = np.where(amax > 0, amax, np.float32(1))
        v = (g * np.where(amax > 0, top / safe, np.float32(0))).astype(np.float32)
        q = np.rint(v)
        if bits == "int8x2":
            q = q + np.rint((v - q).astype(np.float32) * np.float32(254)) / np.float32(254)
        return (q * (amax / top)).reshape(x.shape).astype(self.dtype)

    def _proj(self, x: np.ndarray, name: str) -> np.ndarray:
        y = self._blocks(x, name) @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def forward(self, tokens: Iterable[int]) -> np.ndarray:
        """Append ``tokens`` to the sequence; return their logits, shape (len(tokens), vocab)."""
        ids = np.asarray(list(tokens), dtype=np.int64)
        T, H, KV, D = len(ids), self.n_head, self.n_kv, self.head_dim
        start = self.pos
        cos, sin = rope_tables(np.arange(start, start + T), D, self.theta, self.dtype, self.cfg.get("rope_scaling"))
        x = self.w["model.embed_tokens.weight"][ids]
        group = H // KV
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            h = rms_norm(x, self.w[p + "input_layernorm.weight"], self.eps)
            q = self._proj(h, p + "self_attn.q_proj").reshape(T, H, D).transpose(1, 0, 2)
            k = self._proj(h, p + "self_attn.k_proj").reshape(T, KV, D).transpose(1, 0, 2)
            v = self._proj(h, p + "self_attn.v_proj").reshape(T, KV, D).transpose(1, 0, 2)
            if p + "self_attn.q_norm.weight" in self.w:  # Qwen3: each head normalized over its own D values
                q = rms_norm(q, self.w[p + "self_attn.q_norm.weight"], self.eps)
                k = rms_norm(k, self.w[p + "self_attn.k_norm.weight"], self.eps)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self.k_cache[i] = K = np.concatenate([self.k_cache[i], k], axis=1)  # (KV, S, D)
            self.v_cache[i] = V = np.concatenate([self.v_cache[i], v], axis=1)
            S = K.shape[1]
            Kh, Vh = np.repeat(K, group, axis=0), np.repeat(V, group, axis=0)  # query head j uses kv head j // group
            scores = q @ Kh.transpose(0, 2, 1) / np.sqrt(D)  # (H, T, S)
            # query t sits at absolute position start + t and may see keys 0..start + t (within its window)
            scores = np.where(attention_mask(start, T, S, self.windows[i])[None], -np.inf, scores)
            scores = scores - scores.max(axis=-1, keepdims=True)
            pr = np.exp(scores)
            pr /= pr.sum(axis=-1, keepdims=True)
            att = (pr @ Vh).transpose(1, 0, 2).reshape(T, H * D)
            x = x + self._proj(att, p + "self_attn.o_proj")
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], self.eps)
            g = self._proj(h, p + "mlp.gate_proj")
            u = self._proj(h, p + "mlp.up_proj")
            x = x + self._proj(silu(g) * u, p + "mlp.down_proj")
        x = rms_norm(x, self.w["model.norm.weight"], self.eps)
        return self._blocks(x, "lm_head") @ self.lm_head.T

    def greedy(self, prompt: list[int], max_new_tokens: int, stop: Iterable[int] = ()) -> list[int]:
        """Greedy decode after ``prompt`` (prefill once, then one token at a time)."""
        stop = set(stop)
        self.reset()
        logits = self.forward(prompt)[-1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            t = int(np.argmax(logits))
            if t in stop:
                break
            out.append(t)
            logits = self.forward([t])[-1]
        return out


def check_integer_activation_logits(got: np.ndarray, blocks: np.ndarray, exact: np.ndarray) -> None:
    """Assert that logits of kernels computing with integer activation blocks (~15 bits) match the maths.

    ``blocks``: this reference with the kernels' ``activations`` (form per product); ``exact``: with float
    activations. The logits must match the blocks' maths to 7.5e-3 (1e-3 as for float kernels, plus the odd activation
    that float32 noise puts on the other side of a rounding boundary, which moves logits ~1e-3 at these widths and
    adds up over 30 layers: SmolLM2's teacher-forced logits on the page measured 4.3e-3 with TVM's attention kernels
    and 5.1e-3 with compile/cpu_attention.py's, which agree with TVM's to 1e-6 on their own) and the float maths
    within 1% of the logits' spread (SmolLM2: ~0.005 on a spread of 6.9).
    """
    spread = float(exact.std())
    np.testing.assert_allclose(got, blocks, atol=7.5e-3, rtol=0)
    assert np.abs(got - exact).max() < 0.01 * spread, (np.abs(got - exact).max(), spread)


def load_weights(checkpoint) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (from ``compile.checkpoint.open_checkpoint``) as float32 arrays."""
    return {name: t.to_numpy() for name, t in checkpoint.iter_tensors()}


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GeLU with the tanh approximation (PyTorch's ``gelu(approximate='tanh')``)."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def soft_cap(x: np.ndarray, cap: float | None) -> np.ndarray:
    """``cap * tanh(x / cap)``: x squashed smoothly into (-cap, cap); identity without a cap."""
    return x if not cap else (cap * np.tanh(x / cap)).astype(x.dtype)


def gemma_attention(q, K, V, group: int, query_pre_attn_scalar: float, masked, cap: float | None = None):
    """Gemma's attention of q (H, T, D) over the cache K, V (KV, S, D): scores times query_pre_attn_scalar^-1/2,
    soft-capped by ``cap`` (Gemma 2), ``masked`` (T, S) positions removed, softmax; -> (T, H * D)."""
    H, T, D = q.shape
    Kh, Vh = np.repeat(K, group, axis=0), np.repeat(V, group, axis=0)
    scores = soft_cap(q @ Kh.transpose(0, 2, 1) / np.sqrt(query_pre_attn_scalar), cap)
    scores = np.where(masked[None], -np.inf, scores)
    pr = np.exp(scores - scores.max(axis=-1, keepdims=True))
    pr /= pr.sum(axis=-1, keepdims=True)
    return (pr @ Vh).transpose(1, 0, 2).reshape(T, H * D)


class Gemma3Reference(LlamaReference):
    """Gemma 3 (text) from its report: embedding times sqrt(hidden); RMSNorms multiply by (1 + w); a norm after
    attention and around the MLP; GeGLU-tanh; q/k heads normalized; scores times query_pre_attn_scalar^-1/2;
    sliding layers (all but every ``sliding_window_pattern``-th) use RoPE base ``rope_local_base_freq`` without
    scaling, global layers ``rope_theta`` with ``rope_scaling``; sliding layers attend within ``sliding_window``."""

    def forward(self, tokens: Iterable[int]) -> np.ndarray:
        ids = np.asarray(list(tokens), dtype=np.int64)
        c, eps = self.cfg, self.eps
        T, H, KV, D = len(ids), self.n_head, self.n_kv, self.head_dim
        start = self.pos
        pos = np.arange(start, start + T)
        tables = {
            "local": rope_tables(pos, D, float(c["rope_local_base_freq"]), self.dtype, None),
            "global": rope_tables(pos, D, self.theta, self.dtype, c.get("rope_scaling")),
        }

        def norm(x, name):
            return rms_norm(x, 1.0 + self.w[name], eps)

        x = self.w["model.embed_tokens.weight"][ids] * self.dtype.type(np.sqrt(c["hidden_size"]))
        group = H // KV
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            cos, sin = tables["local" if (i + 1) % int(c["sliding_window_pattern"]) else "global"]
            h = norm(x, p + "input_layernorm.weight")
            q = self._proj(h, p + "self_attn.q_proj").reshape(T, H, D).transpose(1, 0, 2)
            k = self._proj(h, p + "self_attn.k_proj").reshape(T, KV, D).transpose(1, 0, 2)
            v = self._proj(h, p + "self_attn.v_proj").reshape(T, KV, D).transpose(1, 0, 2)
            q, k = norm(q, p + "self_attn.q_norm.weight"), norm(k, p + "self_attn.k_norm.weight")
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self.k_cache[i] = K = np.concatenate([self.k_cache[i], k], axis=1)
            self.v_cache[i] = V = np.concatenate([self.v_cache[i], v], axis=1)
            att = gemma_attention(q, K, V, group, float(c["query_pre_attn_scalar"]),
                                  attention_mask(start, T, S=K.shape[1], window=self.windows[i]))
            x = x + norm(self._proj(att, p + "self_attn.o_proj"), p + "post_attention_layernorm.weight")
            h = norm(x, p + "pre_feedforward_layernorm.weight")
            g, u = self._proj(h, p + "mlp.gate_proj"), self._proj(h, p + "mlp.up_proj")
            x = x + norm(self._proj(gelu_tanh(g) * u, p + "mlp.down_proj"), p + "post_feedforward_layernorm.weight")
        x = norm(x, "model.norm.weight")
        return x @ self.lm_head.T




class Gemma2Reference(LlamaReference):
    """Gemma 2 from its report: embedding times sqrt(hidden); RMSNorms multiply by (1 + w); a norm after attention
    and around the MLP; GeGLU-tanh; one RoPE base; scores times query_pre_attn_scalar^-1/2, then soft-capped
    (``attn_logit_softcapping * tanh(score / attn_logit_softcapping)``) before the mask and softmax; the even layers
    (or ``layer_types``' sliding ones) attend within ``sliding_window``; logits soft-capped with
    ``final_logit_softcapping``. A cap of None leaves the values as they are."""

    def __init__(self, weights, config, dtype=np.float32, activations=None):
        config = dict(config)
        if config.get("sliding_window") and config.get("sliding_layers") is None and not config.get("layer_types"):
            config["sliding_layers"] = list(range(0, int(config["num_hidden_layers"]), 2))
        super().__init__(weights, config, dtype, activations)

    def forward(self, tokens: Iterable[int]) -> np.ndarray:
        ids = np.asarray(list(tokens), dtype=np.int64)
        c, eps = self.cfg, self.eps
        T, H, KV, D = len(ids), self.n_head, self.n_kv, self.head_dim
        start = self.pos
        cos, sin = rope_tables(np.arange(start, start + T), D, self.theta, self.dtype, None)

        def norm(x, name):
            return rms_norm(x, 1.0 + self.w[name], eps)

        x = self.w["model.embed_tokens.weight"][ids] * self.dtype.type(np.sqrt(c["hidden_size"]))
        group = H // KV
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            h = norm(x, p + "input_layernorm.weight")
            q = self._proj(h, p + "self_attn.q_proj").reshape(T, H, D).transpose(1, 0, 2)
            k = self._proj(h, p + "self_attn.k_proj").reshape(T, KV, D).transpose(1, 0, 2)
            v = self._proj(h, p + "self_attn.v_proj").reshape(T, KV, D).transpose(1, 0, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            self.k_cache[i] = K = np.concatenate([self.k_cache[i], k], axis=1)
            self.v_cache[i] = V = np.concatenate([self.v_cache[i], v], axis=1)
            att = gemma_attention(q, K, V, group, float(c["query_pre_attn_scalar"]),
                                  attention_mask(start, T, S=K.shape[1], window=self.windows[i]),
                                  cap=c.get("attn_logit_softcapping"))
            x = x + norm(self._proj(att, p + "self_attn.o_proj"), p + "post_attention_layernorm.weight")
            h = norm(x, p + "pre_feedforward_layernorm.weight")
            g, u = self._proj(h, p + "mlp.gate_proj"), self._proj(h, p + "mlp.up_proj")
            x = x + norm(self._proj(gelu_tanh(g) * u, p + "mlp.down_proj"), p + "post_feedforward_layernorm.weight")
        x = norm(x, "model.norm.weight")
        return soft_cap(x @ self.lm_head.T, c.get("final_logit_softcapping"))


def reference_for(weights: Mapping[str, np.ndarray], config: Mapping, dtype=np.float32) -> LlamaReference:
    """The reference of the config's family (Gemma 2's, Gemma 3's or the Llama decoder's)."""
    kind = str(config.get("architecture") or config.get("model_type") or "llama")
    cls = {"gemma3_text": Gemma3Reference, "gemma2": Gemma2Reference}.get(kind, LlamaReference)
    return cls(weights, config, dtype)
