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
    tvm.endScope();
    await dev.sync();
    out.push({p: Array.from(sp.toArray()), i: Array.from(si.toArray()), s: Array.from(smh.toArray())});
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
    return out


@pytest.mark.parametrize("hardware", [False, True], ids=["software-adapter", "hardware"])
def test_gpu_argsort_probs_matches_the_top_first_order(host_server, chromium, hardware):
    """Both builds: the software adapter's insertion passes and the hardware GPUs' ranking passes
    (``_add_sampling(hardware=True)``: chunks ranked in shared memory, candidates merged by rank), and the
    hardware build's two-pass softmax against numpy's."""
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
