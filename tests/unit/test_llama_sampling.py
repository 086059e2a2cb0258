"""The logit-processing and sampling functions web-llm calls, compiled natively and checked against numpy."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from sampling import top_first
from tiny import TinyLlama
from webllm_widget.compile.arch.llama.config import LlamaConfig
from webllm_widget.compile.model_lib import TOP_SORTED, compile_model, export_model

V = 352


@pytest.fixture(scope="module")
def vm():
    cfg = LlamaConfig.from_dict(TinyLlama.make(seed=0, layers=1).config)
    exe = compile_model(export_model(cfg, "q0f32", "llvm"), "llvm")
    machine = relax.VirtualMachine(exe, tvm.cpu())

    class Functions:  # like tvmjs's vm.getFunction, which also finds the kernels web-llm calls directly
        def __getitem__(self, name):
            return machine.module.get_function(name, query_imports=True)

    return Functions()


def t(a):
    return tvm.runtime.tensor(np.asarray(a), tvm.cpu())


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_softmax_with_temperature_matches_numpy_and_near_zero_temperature_is_one_hot(vm):
    logits = np.random.default_rng(0).standard_normal((1, 1, V)).astype("float32") * 3
    got = vm["softmax_with_temperature"](t(logits), t(np.array([0.7], "float32"))).numpy()
    np.testing.assert_allclose(got, softmax(logits / 0.7), rtol=1e-5, atol=1e-7)
    greedy = vm["softmax_with_temperature"](t(logits), t(np.array([1e-6], "float32"))).numpy()  # web-llm's floor
    assert greedy[0, 0, logits.argmax()] == pytest.approx(1.0) and greedy.sum() == pytest.approx(1.0)


def test_argsort_probs_puts_the_most_likely_tokens_first_in_descending_order(vm):
    p = softmax(np.random.default_rng(1).standard_normal((1, V)).astype("float32"))
    p[0, 7] = p[0, 9] = p[0].max() * 1.5  # a tie at the top: lower id first
    out = vm["argsort_probs"](t(p))
    sp, si = out[0].numpy(), out[1].numpy()
    assert si.dtype == np.int32
    np.testing.assert_array_equal(si[0], top_first(p[0]))
    assert si[0][0] == 7 and si[0][1] == 9
    np.testing.assert_array_equal(sp[0], p[0][si[0]])


def expected_sample(sorted_p, sorted_i, u, top_p):
    """Nucleus within the sorted head (whole vocabulary if the head holds less than top_p), then cumsum > u * mass."""
    cum = np.cumsum(sorted_p.astype(np.float32), dtype=np.float32)
    head = min(TOP_SORTED, len(cum))
    reach = np.nonzero(cum[:head] >= top_p)[0]
    keep = int(reach[0]) + 1 if len(reach) else len(cum)
    mass = cum[keep - 1]
    above = np.nonzero(cum[:keep - 1] > np.float32(u) * mass)[0]
    return int(sorted_i[above[0] if len(above) else keep - 1])


@pytest.mark.parametrize("u,top_p,sharp", [(0.0, 1.0, 2), (0.3, 1.0, 2), (0.999, 1.0, 2), (0.5, 0.5, 6), (0.99, 0.2, 6),
                                           (0.7, 1e-5, 2), (0.6, 0.9, 1)])
def test_sample_with_top_p_picks_the_token_whose_cumulative_mass_covers_u(vm, u, top_p, sharp):
    p = softmax(np.random.default_rng(2).standard_normal((1, V)).astype("float32") * sharp)
    out = vm["argsort_probs"](t(p))
    sp, si = out[0].numpy(), out[1].numpy()
    got = vm["sample_with_top_p"](t(sp), t(si), t(np.array([u], "float32")), t(np.array([0], "int32")),
                                  t(np.array([top_p], "float32"))).numpy()
    assert got.shape == (1,) and got[0] == expected_sample(sp[0], si[0], u, top_p)
    if top_p <= 1e-5:
        assert got[0] == np.argmax(p[0])  # top_p at web-llm's floor is greedy


def test_penalty_bias_and_bitmask_change_only_the_named_logits(vm):
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((1, V)).astype("float32")
    ids, cnt = np.array([5, 9, 200], "int32"), np.array([1, 3, 2], "int32")
    pen = np.array([[0.5, 0.25, 1.3]], "float32")  # presence, frequency, repetition
    x = t(logits.copy())
    vm["apply_penalty_inplace"](x, t(np.array([0], "int32")), t(np.zeros(3, "int32")), t(ids), t(cnt), t(pen))
    want = logits.copy()
    for i, c in zip(ids, cnt):
        v = want[0, i] - 0.5 - c * 0.25
        want[0, i] = v * 1.3 if v < 0 else v / 1.3
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-6)

    y = t(logits.copy())
    vm["apply_logit_bias_inplace"](y, t(np.zeros(2, "int32")), t(np.array([1, 300], "int32")),
                                   t(np.array([2.0, -4.0], "float32")))
    want = logits.copy()
    want[0, 1] += 2.0
    want[0, 300] -= 4.0
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-6)

    allowed = np.zeros(V, bool)
    allowed[[0, 31, 32, 100, 351]] = True
    words = np.packbits(allowed.reshape(-1, 32)[:, ::-1], axis=1).view(">u4").astype(np.uint32).view(np.int32)
    z = t(logits.copy())
    vm["apply_bitmask_inplace"](z, t(np.array([0], "int32")), t(words.reshape(1, -1)))
    out = z.numpy()[0]
    np.testing.assert_array_equal(out[allowed], logits[0][allowed])
    assert (out[~allowed] < -1e38).all()
