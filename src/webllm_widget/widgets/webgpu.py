"""The ``WebGPU`` teaching widget: run TVM-compiled functions on the notebook page's GPU and get numpy back.

Example (in a notebook cell; the widget must be displayed in a browser page)::

    import numpy as np
    from webllm_widget import WebGPU
    from webllm_widget.compile import build

    gpu = WebGPU(); gpu                       # shows the browser's adapter
    f = gpu.load(build(MatmulBias))           # ships the .wasm (cached in the page: a second load sends nothing)
    y = await f(x, w, b)                      # runs on the browser's WebGPU, returns numpy
    np.abs(y - (x @ w + b)).max()
    await gpu.time(f, x, w, b, repeat=20)     # per-run GPU timings
    gpu.wgsl(f)                               # the generated WGSL

Calls are ``async`` because a running cell sees widget messages only while it awaits.
"""
from __future__ import annotations

import html
import re
import statistics
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import anywidget
import numpy as np
import traitlets

from ..artifacts import Blob, BlobSender, static_blob
from ..errors import KernelError, WebGPUUnavailable, WebLLMWidgetError
from ..protocol import CALL, LOAD, PROFILE, Channel, Reply
from ..wire.schema import GpuCall, GpuLoad, GpuProfile, TensorSpec

_STATIC = Path(__file__).parent.parent / "static"

#: Seconds to wait for the page to load a library (shader compilation on a software adapter is slow).
LOAD_TIMEOUT = 600.0
#: Seconds to wait for one call.
CALL_TIMEOUT = 600.0
#: Seconds to wait for the page to say it listens.
READY_TIMEOUT = 60.0
#: Seconds to wait for a model profile (copying the model, shader compilation, the steps).
PROFILE_TIMEOUT = 900.0


@dataclass(frozen=True)
class Param:
    """One tensor parameter of a VM function: dtype and shape (ints, or names of symbolic dims)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...] | None  # None: any rank

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


def signatures_of(mod: Any) -> dict[str, list[Param]]:
    """Parameter types of each Relax function in an ``IRModule``."""
    from ..compile.build import relax_signatures

    return _as_params(relax_signatures(mod))


def _as_params(sigs: dict) -> dict[str, list[Param]]:
    return {fn: [Param(p["name"], p["dtype"], None if p.get("shape") is None else tuple(p["shape"]))
                 for p in params] for fn, params in sigs.items()}


def check_args(fn_name: str, params: Sequence[Param], arrays: Sequence[np.ndarray]) -> None:
    """Raise :class:`KernelError` (with ``detail["reason"]``) when ``arrays`` do not fit ``params``."""
    sig = f"{fn_name}({', '.join(p.describe() for p in params)})"
    if len(arrays) != len(params):
        raise KernelError(f"{fn_name} takes {len(params)} arrays, got {len(arrays)}. Signature: {sig}",
                          detail={"reason": "arity"})
    bound: dict[str, int] = {}
    for p, a in zip(params, arrays):
        if str(a.dtype) != p.dtype:
            raise KernelError(
                f"{fn_name}: argument {p.name} has dtype {a.dtype}, expected {p.dtype} "
                f"(convert with .astype(np.{p.dtype})). Signature: {sig}", detail={"reason": "dtype", "param": p.name})
        if p.shape is None:
            continue
        if a.ndim != len(p.shape):
            raise KernelError(
                f"{fn_name}: argument {p.name} has shape {a.shape}, expected {len(p.shape)} dimensions. "
                f"Signature: {sig}", detail={"reason": "shape", "param": p.name})
        for want, got in zip(p.shape, a.shape):
            if isinstance(want, int):
                ok = want == got
            else:
                ok = bound.setdefault(want, got) == got
            if not ok:
                raise KernelError(
                    f"{fn_name}: argument {p.name} has shape {a.shape}, which does not fit "
                    f"[{', '.join(map(str, p.shape))}] (with {bound}). Signature: {sig}",
                    detail={"reason": "shape", "param": p.name})


@dataclass
class GPUTimings:
    """Per-run times of one function on the page's GPU, in milliseconds."""

    function: str
    runs_ms: list[float]
    method: str   # "timestamp-query" (GPU pass durations) or "wall-clock" (call to onSubmittedWorkDone)
    detail: str = ""

    @property
    def median_ms(self) -> float:
        return statistics.median(self.runs_ms)

    @property
    def min_ms(self) -> float:
        return min(self.runs_ms)

    def __repr__(self) -> str:
        return (f"GPUTimings({self.function}: median {self.median_ms:.3f} ms, min {self.min_ms:.3f} ms over "
                f"{len(self.runs_ms)} runs, {self.method})")


_WGSL_KEYWORDS = ("fn var let const struct return if else for loop while break continue switch case default "
                  "override enable requires alias discard").split()
_WGSL_TYPES = ("f32 f16 i32 u32 bool vec2 vec3 vec4 array atomic ptr mat2x2 mat3x3 mat4x4 "
               "vec2f vec3f vec4f vec2i vec3i vec4i vec2u vec3u vec4u").split()
_WGSL_TOKEN = re.compile(r"(?P<comment>//[^\n]*)|(?P<attr>@\w+)|(?P<num>\b\d[\w.]*\b)|(?P<word>\b[A-Za-z_]\w*\b)")


def highlight_wgsl(src: str) -> str:
    """WGSL as HTML with a few colours (comments, attributes, keywords, types, numbers)."""
    out, pos = [], 0
    for m in _WGSL_TOKEN.finditer(src):
        out.append(html.escape(src[pos:m.start()]))
        text = html.escape(m.group())
        color = None
        if m.lastgroup == "comment":
            color = "#6a737d"
        elif m.lastgroup == "attr":
            color = "#b36200"
        elif m.lastgroup == "num":
            color = "#005cc5"
        elif m.group() in _WGSL_KEYWORDS:
            color = "#d73a49"
        elif m.group() in _WGSL_TYPES:
            color = "#6f42c1"
        out.append(f'<span style="color:{color}">{text}</span>' if color else text)
        pos = m.end()
    out.append(html.escape(src[pos:]))
    return "".join(out)


@dataclass
class WGSLSource:
    """The WGSL of a library's kernels; shows highlighted in a notebook, plain with ``print``."""

    kernels: dict[str, str]

    def __str__(self) -> str:
        return "\n\n".join(f"// ---- {name}\n{src}" for name, src in self.kernels.items())

    def __repr__(self) -> str:
        return f"WGSLSource({list(self.kernels)})"

    def __getitem__(self, name: str) -> str:
        return self.kernels[name]

    def _repr_html_(self) -> str:
        parts = []
        for i, (name, src) in enumerate(self.kernels.items()):
            parts.append(f"<details{' open' if i == 0 else ''}><summary><code>{html.escape(name)}</code> "
                         f"({src.count(chr(10)) + 1} lines)</summary>"
                         f"<pre style='font-size:12px;line-height:1.35'>{highlight_wgsl(src)}</pre></details>")
        return "<div>" + "".join(parts) + "</div>"


class _LoadedLibrary:
    """A library offered to the page, and the (re-doable) request that loads it there."""

    def __init__(self, gpu: "WebGPU", library: Any, signatures: dict[str, list[Param]]):
        self.gpu = gpu
        self.library = library
        self.signatures = signatures
        self.blob = Blob.from_bytes(library.wasm, f"{library.name or 'library'}.wasm", sha256=library.sha256)
        self.reply: Reply | None = None
        self.page_load = -1  # ready_count of the page that got the load

    def request(self) -> Reply:
        ch = self.gpu._channel
        # A request sent before any page listened is queued for the first page: count it as that page's.
        page = ch.ready_count or 1
        stale = self.reply is None or self.page_load != page or (
            self.reply.done() and self.reply.exception() is not None)
        if stale:
            runtime = self.gpu._blobs.offer(static_blob("tvmjs.js"))
            lib = self.gpu._blobs.offer(self.blob)
            self.page_load = page
            self.reply = ch.request(LOAD, GpuLoad(runtime=runtime, library=lib), timeout=LOAD_TIMEOUT)
        assert self.reply is not None
        return self.reply


class GPUFunction:
    """A VM function of a library loaded into a :class:`WebGPU` widget. ``await f(*arrays)`` runs it."""

    def __init__(self, loaded: _LoadedLibrary, name: str):
        self._loaded = loaded
        self.name = name

    @property
    def library(self) -> Any:
        return self._loaded.library

    @property
    def signature(self) -> list[Param] | None:
        return self._loaded.signatures.get(self.name)

    def __getitem__(self, name: str) -> "GPUFunction":
        """Another function of the same library: ``f["reduce"]``."""
        if name not in self.library.functions:
            raise KernelError(f"the library has no function {name!r}; it has {self.library.functions}")
        return GPUFunction(self._loaded, name)

    def __repr__(self) -> str:
        sig = self.signature
        params = ", ".join(p.describe() for p in sig) if sig is not None else "..."
        return f"GPUFunction({self.name}({params}), library sha256={self.library.sha256[:12]}…)"

    async def __call__(self, *arrays: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        outputs, _ = await self._loaded.gpu._call(self, arrays, repeat=0, warmup=0)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def submit(self, *arrays: Any, on_result: Callable[[Any], Any] | None = None,
               on_error: Callable[[BaseException], Any] | None = None) -> "GPUCall":
        """Run without waiting: returns a :class:`GPUCall` at once; ``on_result(outputs)`` (or ``on_error``) runs
        when the page answers. For hosts where a running cell receives no widget messages (marimo); elsewhere
        ``await f(*arrays)`` reads better. The arguments are checked here, at once."""
        return self._loaded.gpu._submit(self, arrays, on_result, on_error)


class GPUCall:
    """A call started with :meth:`GPUFunction.submit`. ``done()`` says whether the page answered; ``result`` is
    the output (an array, or a tuple of them) and raises the call's error; ``error`` is that error or None."""

    def __init__(self, name: str, on_result: Callable[[Any], Any] | None,
                 on_error: Callable[[BaseException], Any] | None):
        self.name = name
        self.error: BaseException | None = None
        self._outputs: Any = None
        self._done = False
        self._on_result, self._on_error = on_result, on_error

    def done(self) -> bool:
        return self._done

    @property
    def result(self) -> Any:
        if not self._done:
            raise RuntimeError(f"{self.name}: the page has not answered yet (look again after the cell ends)")
        if self.error is not None:
            raise self.error
        return self._outputs

    def _finish(self, outputs: list | None, error: BaseException | None) -> None:
        if self._done:
            return
        self._done = True
        self.error = error
        if outputs is not None:
            self._outputs = outputs[0] if len(outputs) == 1 else tuple(outputs)
        if error is not None and self._on_error:
            self._on_error(error)
        elif error is None and self._on_result:
            self._on_result(self._outputs)

    def __repr__(self) -> str:
        state = "error" if self.error is not None else ("done" if self._done else "running")
        return f"<GPUCall {self.name}: {state}>"


class WebGPU(anywidget.AnyWidget):
    """Runs TVM-compiled functions on the WebGPU of the page that displays this widget.

    The widget shows the adapter (vendor, architecture, features, limits) and a log of what ran.
    ``adapter`` holds the same facts as a dict (empty until the page answered, or without WebGPU).
    """

    _esm = _STATIC / "gpu_widget.js"
    adapter = traitlets.Dict().tag(sync=True)
    webgpu_error = traitlets.Unicode("").tag(sync=True)
    calls_done = traitlets.Int(0, help="calls the page answered; written by the page only, so that hosts which "
                                       "re-run code on a widget change from the page (marimo's mo.ui.anywidget) "
                                       "see each one").tag(sync=True)
    # Lets the page's views find the state that initialize() made for this model.
    _instance_id = traitlets.Unicode().tag(sync=True)

    def __init__(self, **kwargs: Any):
        from ..compile.keys import require_compiler

        require_compiler("the WebGPU teaching widget (it runs functions compiled here by apache-tvm)")
        if not (_STATIC / "gpu_widget.js").exists():
            static_blob("gpu_widget.js")  # raises ToolchainMissing with the fix
        kwargs.setdefault("_instance_id", uuid.uuid4().hex)
        super().__init__(**kwargs)
        self._channel = Channel(self)
        self._blobs = BlobSender(self._channel)
        self._libraries: dict[str, _LoadedLibrary] = {}
        self._channel.on_ready(self._on_ready)

    # -- state from the page -------------------------------------------------------------------

    def _on_ready(self, page: dict) -> None:
        self.adapter = dict(page.get("adapter") or {})
        self.webgpu_error = str(page.get("webgpu_error") or "")

    @property
    def bytes_sent(self) -> int:
        """Bytes of blob data (runtime bundle, libraries) this widget sent to the page so far."""
        return self._blobs.bytes_sent

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict:
        """Wait for the page; returns the adapter dict. Raises WebGPUUnavailable when the page has none."""
        await self._channel.wait_ready(timeout)
        if not self.adapter:
            err = WebGPUUnavailable(
                (self.webgpu_error or "the page has no WebGPU adapter") +
                " — use a browser with WebGPU (Chrome/Edge 113+, or Firefox 141+ on Windows), "
                "served from https or localhost.")
            raise err
        return self.adapter

    # -- loading ----------------------------------------------------------------------------------

    def load(self, library_or_module: Any, function: str | None = None) -> GPUFunction:
        """Ship a compiled library to the page and return one of its functions (default: ``main``).

        Accepts a :class:`webllm_widget.compile.Library`, or a Relax ``IRModule`` which is built for
        WebGPU first. Returns at once; the transfer runs while the kernel handles messages, and
        the first call waits for it. Content-addressed: the page keeps it in Cache Storage, so
        loading the same library again (even after a reload) sends no bytes.
        """
        library, sigs = self._as_library(library_or_module)
        if getattr(library, "target", "webgpu") != "webgpu":
            raise KernelError(f"this library was built for {library.target!r}; the WebGPU widget runs "
                              "libraries built with build(mod, target='webgpu')", detail={"reason": "target"})
        loaded = self._libraries.get(library.sha256)
        if loaded is None:
            loaded = self._libraries[library.sha256] = _LoadedLibrary(self, library, sigs)
        elif sigs and not loaded.signatures:
            loaded.signatures = sigs
        loaded.request()
        names = list(library.functions)
        if function is None:
            function = "main" if "main" in names else (names[0] if len(names) == 1 else None)
            if function is None:
                raise KernelError(f"the library has several functions {names}; pass function=<name>")
        elif function not in names:
            raise KernelError(f"the library has no function {function!r}; it has {names}")
        return GPUFunction(loaded, function)

    @staticmethod
    def _as_library(obj: Any) -> tuple[Any, dict[str, list[Param]]]:
        if hasattr(obj, "wasm") and hasattr(obj, "sha256") and hasattr(obj, "functions"):
            return obj, _as_params(getattr(obj, "signatures", None) or {})
        import tvm

        if isinstance(obj, tvm.IRModule):
            from ..compile import build

            return build(obj, target="webgpu"), signatures_of(obj)
        raise TypeError(f"load() takes a compiled Library or a Relax IRModule, not {type(obj).__name__}")

    # -- running ------------------------------------------------------------------------------------

    def _checked(self, f: GPUFunction, arrays: Sequence[Any]) -> list[np.ndarray]:
        arrs = [np.ascontiguousarray(a) for a in arrays]
        if f.signature is not None:
            check_args(f.name, f.signature, arrs)
        return arrs

    def _request_call(self, f: GPUFunction, arrs: list[np.ndarray], repeat: int, warmup: int) -> Reply:
        specs = [TensorSpec(shape=list(a.shape), dtype=str(a.dtype)) for a in arrs]
        payload = GpuCall(library=f.library.sha256, fn=f.name, args=specs, repeat=repeat, warmup=warmup)
        return self._channel.request(CALL, payload, [memoryview(a).cast("B") if a.ndim else a.tobytes()
                                                     for a in arrs], timeout=CALL_TIMEOUT)

    @staticmethod
    def _outputs(msg: dict, buffers: list) -> list[np.ndarray]:
        outputs = []
        for spec, buf in zip(msg.get("outputs", []), buffers):
            outputs.append(np.frombuffer(bytes(buf) if not isinstance(buf, (bytes, bytearray)) else buf,
                                         dtype=np.dtype(spec["dtype"])).reshape(spec["shape"]).copy())
        return outputs

    async def _call(self, f: GPUFunction, arrays: Sequence[Any], *, repeat: int, warmup: int):
        try:
            await self.wait_ready()
            arrs = self._checked(f, arrays)
            await f._loaded.request()
            msg, buffers = await self._request_call(f, arrs, repeat, warmup)
        except WebLLMWidgetError as err:
            # Errors the page found are already shown there; show the kernel's own ones too.
            if not err.detail.get("id"):
                self._channel.notify_error(err)
            raise
        return self._outputs(msg, buffers), msg.get("timings")

    def _submit(self, f: GPUFunction, arrays: Sequence[Any], on_result: Callable[[Any], Any] | None,
                on_error: Callable[[BaseException], Any] | None) -> GPUCall:
        """:meth:`GPUFunction.submit`: the load, then the call, chained by reply callbacks (nothing awaits)."""
        try:
            arrs = self._checked(f, arrays)
        except WebLLMWidgetError as err:
            self._channel.notify_error(err)
            raise
        call = GPUCall(f.name, on_result, on_error)

        def called(reply: Reply) -> None:
            err = reply.exception()
            call._finish(None, err) if err is not None else call._finish(self._outputs(*reply.result()), None)

        def loaded(reply: Reply) -> None:
            err = reply.exception()
            if err is not None:
                call._finish(None, err)
            else:
                self._request_call(f, arrs, 0, 0).add_done_callback(called)

        f._loaded.request().add_done_callback(loaded)
        return call

    async def time(self, f: GPUFunction, *arrays: Any, repeat: int = 10, warmup: int = 1) -> GPUTimings:
        """Run ``f(*arrays)`` ``warmup`` + ``repeat`` times on the page's GPU and return per-run times.

        Inputs are uploaded once. Uses GPU timestamp queries where the adapter offers
        ``timestamp-query`` (sum of the compute passes of a run), else wall time from the call
        until ``queue.onSubmittedWorkDone`` (``GPUTimings.method`` says which).
        """
        if repeat < 1:
            raise ValueError("repeat must be at least 1")
        _, t = await self._call(f, arrays, repeat=repeat, warmup=warmup)
        return GPUTimings(f.name, [float(x) for x in t["runs_ms"]], str(t["method"]), str(t.get("detail", "")))

    async def profile(self, model: Any = None, *, prompt: int = 16, steps: int = 3, sources: bool = True):
        """Run a model library on this page's GPU and time every kernel of its decode step.

        ``model``: a :class:`webllm_widget.Chat` (its model; files the Chat already put in this page's cache are not
        sent again), a model folder, or None for the built-in model. The page prefills ``prompt`` tokens, then runs
        ``steps`` decode steps as web-llm does (forward, GPU sampling, the id read back), timing each compute pass
        with timestamp queries where the adapter has them. With ``sources`` the scheduled TIR of each kernel is made
        again in the kernel (folders built by webllm-widget; tens of seconds once, then cached).
        Returns a :class:`webllm_widget.inside.ModelProfile`.
        """
        from ..models.devices import model_spec
        from ..inside.profile import ModelProfile
        from ..inside.sources import kernel_sources

        if prompt < 1 or steps < 1:
            raise ValueError("prompt and steps must be at least 1")
        name = getattr(model, "model", model)  # a Chat profiles its own model
        await self.wait_ready()
        spec, paths = model_spec(None if name in (None, "", "default") else str(name), "webgpu", progress=False)
        if not spec.get("files"):
            raise KernelError(f"{spec.get('id')}: profiling needs a local model folder (a prebuilt id or URL has "
                              "no files this kernel can read)", detail={"reason": "model"})
        folders = {}
        for s in (spec, spec.get("webgpu_fallback")):
            if s and s.get("files"):
                folders[s["key"]] = paths[s["files"][0]["sha256"]].parent
        for sha, path in paths.items():
            self._blobs.offer(Blob.from_path(path, sha256=sha))
        runtime = self._blobs.offer(static_blob("tvmjs.js"))
        reply = self._channel.request(PROFILE, GpuProfile(runtime=runtime, model=spec, prompt=int(prompt),
                                                          steps=int(steps)), timeout=PROFILE_TIMEOUT)
        msg, _ = await reply
        folder = folders.get(msg.get("model_key"))
        srcs, note = None, ""
        if sources and folder is not None:
            try:
                srcs = kernel_sources(folder)
            except WebLLMWidgetError as e:
                note = str(e)
        elif not sources:
            note = "not asked for (sources=False)"
        return ModelProfile.from_page(msg, folder, srcs, note)

    def wgsl(self, f: GPUFunction | Any) -> WGSLSource:
        """The WGSL of the kernels in ``f``'s library (or of a Library), highlighted in a notebook."""
        lib = f.library if isinstance(f, GPUFunction) else f
        return WGSLSource(dict(lib.wgsl))
