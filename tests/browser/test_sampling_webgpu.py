"""The WebGPU "top-first" argsort (per-slice candidates, a merge into the head, the rest by slices) orders like numpy.

The sampling functions of the model library are compiled alone for WebGPU and run in headless
Chromium (SwiftShader) with tvmjs; ``argsort_probs`` must give exactly the order of
``tests/helpers/sampling.top_first`` (the ``TOP_SORTED`` most likely ids descending, ties by lower id,
then every other id ascending) for vocabularies smaller and larger than one slice per thread,
with ties inside the head and across the cut.
"""
from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from sampling import top_first
from webgpu_model import VM_OPEN
from webllm_widget.compile.build import build
from webllm_widget.compile.model_lib import _add_sampling

pytestmark = pytest.mark.browser

RUN_JS = """async ({lib, cases}) => {
""" + VM_OPEN + """  const out = [];
  for (const p of cases) {
    tvm.beginScope();
    const probs = tvm.empty([1, p.length], 'float32', dev).copyFrom(new Float32Array(p));
    const r = vm.getFunction('argsort_probs')(probs);
    const temp = tvm.empty([1], 'float32', dev).copyFrom(new Float32Array([0.7]));
    const sm = vm.getFunction('softmax_with_temperature')(probs.view([1, 1, p.length]), temp);
    const smh = tvm.detachFromCurrentScope(tvm.empty([1, 1, p.length], 'float32', tvm.cpu()).copyFrom(sm));
    const sp = tvm.detachFromCurrentScope(tvm.empty([1, p.length], 'float32', tvm.cpu()).copyFrom(r.get(0)));
    const si = tvm.detachFromCurrentScope(tvm.empty([1, p.length], 'int32', tvm.cpu()).copyFrom(r.get(1)));
    const am = vm.getFunction('argmax_logits')(probs.view([1, 1, p.length]));  // greedy: the rows as logits
    const amh = tvm.detachFromCurrentScope(tvm.empty([1], 'int32', tvm.cpu()).copyFrom(am));
    tvm.endScope();
    await dev.sync();
    out.push({p: Array.from(sp.toArray()), i: Array.from(si.toArray()), s: Array.from(smh.toArray()),
              a: amh.toArray()[0]});
  }
  return out;
}"""


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for v in (40, 1000, 49152):
        p = rng.random(v).astype(np.float32) ** 4
        p[[5, v // 2, v - 1]] = p.max() * 2  # a three-way tie at the top, far apart
        p /= p.sum()
        out.append(p)
    q = np.full(3000, 1e-4, np.float32)  # nearly flat: ties everywhere, including across the TOP_SORTED cut
    q[100:110] = 2e-3
    out.append(q)
    out.append(np.full(20, 0.05, np.float32))  # fewer tokens than the sorted head: all of it is the head
    # Llama 3's 128,256 tokens (251 chunks of the hardware argsort, the last one short) with ties everywhere: 64
    # levels, so the head and the cut fall inside runs of equal values spread over every chunk; the largest value
    # first at a high id, then again at lower ones
    r = (rng.integers(0, 64, 128256) ** 2).astype(np.float32)
    r[[128000, 70000, 3]] = 4000.0
    out.append(r / r.sum())
    return out


@pytest.mark.parametrize("hardware", [False, True], ids=["software-adapter", "hardware"])
def test_gpu_argsort_probs_matches_the_top_first_order(host_server, chromium, hardware):
    """Both builds: the software adapter's insertion passes and the hardware GPUs' ranking passes
    (``_add_sampling(hardware=True)``: chunks ranked in shared memory, candidates placed by binary searches in the
    chunks whose head comes first, the rest placed a token a thread), the hardware build's two-pass softmax against numpy's, and greedy decoding's
    ``argmax_logits`` (ties: the lowest id) against numpy's argmax."""
    bb = relax.BlockBuilder()
    _add_sampling(bb, gpu=True, hardware=hardware)
    lib = build(bb.finalize(), target="webgpu", progress=False)
    url = host_server.add_route(f"/sampling/{lib.sha256[:16]}.wasm", lib.wasm, "application/wasm")
    cases = _cases()
    page = chromium.new_page()
    try:
        page.goto(host_server.origin + "/blank.html")
        got = page.evaluate(RUN_JS, {"lib": url, "cases": [c.tolist() for c in cases]})
    finally:
        page.close()
    for p, g in zip(cases, got):
        want = top_first(p)
        np.testing.assert_array_equal(np.array(g["i"]), want)
        np.testing.assert_array_equal(np.array(g["p"], np.float32), p[want])
        x = p.astype(np.float64) / 0.7  # softmax_with_temperature at 0.7 of the same row, taken as logits
        e = np.exp(x - x.max())
        np.testing.assert_allclose(np.array(g["s"]), e / e.sum(), rtol=1e-4, atol=1e-9)
        assert g["a"] == int(np.argmax(p)), (g["a"], int(np.argmax(p)))  # greedy: the first maximum
