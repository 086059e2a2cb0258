"""The numpy reference is checked against itself and explicit loops before it judges compiled models."""
from __future__ import annotations

import numpy as np
import pytest

from reference import LlamaReference, apply_rope, load_weights, rope_tables
from tiny import TinyLlama


def _ref(seed=0, dtype=np.float64, **kw) -> tuple[TinyLlama, LlamaReference]:
    m = TinyLlama.make(seed=seed, **kw)
    return m, LlamaReference(m.weights, m.config, dtype=dtype)


def test_prefill_all_equals_token_by_token_decode():
    _, ref = _ref(layers=3)
    ids = [5, 17, 99, 3, 250, 41, 7]
    full = ref.forward(ids)
    ref.reset()
    steps = np.concatenate([ref.forward([t]) for t in ids])
    np.testing.assert_allclose(steps, full, rtol=1e-10, atol=1e-10)


def test_chunked_prefill_equals_full_prefill():
    _, ref = _ref()
    ids = list(range(10, 30))
    full = ref.forward(ids)
    ref.reset()
    chunks = np.concatenate([ref.forward(ids[:7]), ref.forward(ids[7:15]), ref.forward(ids[15:])])
    np.testing.assert_allclose(chunks, full, rtol=1e-10, atol=1e-10)
    assert ref.pos == len(ids)


def test_attention_is_causal():
    _, ref = _ref()
    a = ref.forward([4, 8, 15, 16, 23, 42])
    ref.reset()
    b = ref.forward([4, 8, 15, 16, 23, 99])  # only the last token differs
    np.testing.assert_array_equal(a[:5], b[:5])
    assert np.abs(a[5] - b[5]).max() > 1e-3
    ref.reset()
    c = ref.forward([5, 8, 15, 16, 23, 42])  # the first token differs: every later position changes
    assert all(np.abs(a[i] - c[i]).max() > 1e-6 for i in range(6))


def _naive_forward(w: dict, cfg: dict, ids: list[int]) -> np.ndarray:
    """Scalar loops straight from the formulas (one position, one head, one dim at a time)."""
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg["hidden_size"] // H
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def norm(x, g):
        return x / np.sqrt(sum(v * v for v in x) / len(x) + eps) * g

    def lin(x, name):
        y = np.array([sum(w[name + ".weight"][o, i] * x[i] for i in range(len(x)))
                      for o in range(w[name + ".weight"].shape[0])])
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rope(vec, pos):
        out = np.empty(D)
        for i in range(D // 2):
            ang = pos / theta ** (2 * i / D)
            a, b = vec[i], vec[i + D // 2]
            out[i] = a * np.cos(ang) - b * np.sin(ang)
            out[i + D // 2] = b * np.cos(ang) + a * np.sin(ang)
        return out

    xs = [w["model.embed_tokens.weight"][t].astype(np.float64) for t in ids]
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        hs = [norm(x, w[p + "input_layernorm.weight"]) for x in xs]
        qs = [lin(h, p + "self_attn.q_proj") for h in hs]
        ks = [lin(h, p + "self_attn.k_proj") for h in hs]
        vs = [lin(h, p + "self_attn.v_proj") for h in hs]
        new = []
        for t in range(len(ids)):
            att = np.zeros(H * D)
            for h in range(H):
                kvh = h // (H // KV)
                q = rope(qs[t][h * D:(h + 1) * D], t)
                scores = [float(np.dot(q, rope(ks[s][kvh * D:(kvh + 1) * D], s))) / np.sqrt(D)
                          for s in range(t + 1)]
                mx = max(scores)
                e = [np.exp(s - mx) for s in scores]
                for s in range(t + 1):
                    att[h * D:(h + 1) * D] += e[s] / sum(e) * vs[s][kvh * D:(kvh + 1) * D]
            x = xs[t] + lin(att, p + "self_attn.o_proj")
            h2 = norm(x, w[p + "post_attention_layernorm.weight"])
            g, u = lin(h2, p + "mlp.gate_proj"), lin(h2, p + "mlp.up_proj")
            x = x + lin(g / (1 + np.exp(-g)) * u, p + "mlp.down_proj")
            new.append(x)
        xs = new
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return np.stack([head @ norm(x, w["model.norm.weight"]) for x in xs])


def test_one_layer_with_bias_and_untied_head_matches_explicit_loops():
    m = TinyLlama.make(seed=3, layers=1, hidden=32, heads=4, kv_heads=2, ffn=48, tie=False, bias=True)
    w = {k: v.astype(np.float64) for k, v in m.weights.items()}
    ids = [7, 30, 2, 200]
    expect = _naive_forward(w, m.config, ids)
    got = LlamaReference(w, m.config, dtype=np.float64).forward(ids)
    np.testing.assert_allclose(got, expect, rtol=1e-9, atol=1e-9)


def test_two_layer_tied_model_matches_explicit_loops():
    m = TinyLlama.make(seed=4, layers=2, hidden=32, heads=2, kv_heads=1, ffn=40)
    ids = [1, 100, 50]
    expect = _naive_forward(m.weights, m.config, ids)
    got = LlamaReference(m.weights, m.config, dtype=np.float64).forward(ids)
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_grouped_query_attention_equals_full_attention_with_repeated_kv_heads():
    m = TinyLlama.make(seed=5, heads=4, kv_heads=2)
    D = m.config["head_dim"]
    w = dict(m.weights)
    for L in range(m.config["num_hidden_layers"]):
        for n in ("k", "v"):
            key = f"model.layers.{L}.self_attn.{n}_proj.weight"
            heads = w[key].reshape(2, D, -1)
            w[key] = np.repeat(heads, 2, axis=0).reshape(4 * D, -1)  # kv head j serves query heads 2j, 2j+1
    mha_cfg = dict(m.config, num_key_value_heads=4)
    ids = [9, 8, 7, 6, 5]
    gqa = LlamaReference(m.weights, m.config, dtype=np.float64).forward(ids)
    mha = LlamaReference(w, mha_cfg, dtype=np.float64).forward(ids)
    np.testing.assert_allclose(gqa, mha, rtol=1e-10, atol=1e-10)


def test_rope_scores_depend_only_on_relative_position():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 1, 16)), rng.standard_normal((1, 1, 16))

    def score(m, n):
        cq, sq = rope_tables(np.array([m]), 16, 10000.0, np.float64)
        ck, sk = rope_tables(np.array([n]), 16, 10000.0, np.float64)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), rel=1e-9)
    assert score(7, 3) != pytest.approx(score(7, 4), rel=1e-3)
    c0, s0 = rope_tables(np.array([0]), 16, 10000.0, np.float64)
    np.testing.assert_allclose(apply_rope(q, c0, s0), q)  # position 0 is the identity


def test_float32_reference_tracks_float64():
    m, ref64 = _ref(seed=6)
    ref32 = LlamaReference(m.weights, m.config, dtype=np.float32)
    ids = list(range(3, 40, 3))
    a, b = ref64.forward(ids), ref32.forward(ids)
    assert np.abs(a - b).max() < 1e-3 * np.abs(a).max()


@pytest.mark.slow
def test_smollm2_reference_answers_paris(smollm2_gguf):
    import json

    from tokenizers import Tokenizer

    from webllm_widget.compile.chat_config import chat_template_of, conv_template_from_jinja, render_prompt
    from webllm_widget.compile.tokenizer import tokenizer_json_from_gguf, special_token_ids
    from webllm_widget.compile.checkpoint import open_checkpoint

    ckpt = open_checkpoint(smollm2_gguf)
    doc = tokenizer_json_from_gguf(ckpt)
    tok = Tokenizer.from_str(json.dumps(doc))
    conv = conv_template_from_jinja(chat_template_of(ckpt), special_token_ids(doc))
    prompt = render_prompt(conv, [("user", "What is the capital of France?"), ("assistant", None)])
    ref = LlamaReference(load_weights(ckpt), ckpt.config)
    out = ref.greedy(tok.encode(prompt).ids, 16, stop=conv["stop_token_ids"])
    answer = tok.decode(out)
    assert "Paris" in answer, answer


@pytest.fixture(scope="session")
def smollm2_gguf():
    from webllm_widget.models import default_gguf

    return default_gguf(progress=False)
