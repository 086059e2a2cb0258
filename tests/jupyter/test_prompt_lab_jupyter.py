"""JupyterLab end to end: notebooks/prompt_lab.ipynb (system prompts x temperatures x prompts, a JSON schema through
the drop-in OpenAI client, two models side by side with Chat.batch) with tiny models.

Real JupyterLab, real kernel, real Chat widgets, tiny random-weight Llamas (seed 0 as model A, seed 2 as model B)
on SwiftShader WebGPU: the answers are noise, so this checks the machinery (every run of the grid answered, the
table and the plot were made, the JSON answer keeps to its schema, model A's batch answers are its grid answers
and model B answers differently), not the content.
"""
from __future__ import annotations

import ast
import itertools
import json
import shutil

import pytest

from jupyter import NOTEBOOKS, JupyterLab, wait_notebook

pytestmark = [pytest.mark.browser, pytest.mark.jupyter]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLUMNS = {"system", "temperature", "prompt", "answer", "correct", "tokens", "decode tok/s"}


def grid_of(nb: dict) -> dict:
    """The notebook's grid (SYSTEM_PROMPTS, TEMPERATURES, PROMPTS), read from its source, not restated here."""
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code" and "SYSTEM_PROMPTS =" in src:
            tree = ast.parse(src)
            return {a.targets[0].id: ast.literal_eval(a.value) for a in tree.body if isinstance(a, ast.Assign)}
    raise AssertionError("prompt_lab.ipynb has no SYSTEM_PROMPTS cell")


@pytest.fixture(scope="module")
def tiny_seed2_folder():
    from tiny import TinyLlama

    from webllm_widget.cache import cache_dir
    from webllm_widget.compile.pipeline import build_model_folder

    hf = TinyLlama.make(seed=2).write_hf(cache_dir() / "test-sources" / "tiny-llama-seed2")
    return build_model_folder(hf, quantization="q4f32_1", progress=False)


def test_prompt_lab_notebook_answers_every_grid_cell_in_jupyterlab(chromium, tmp_path, tiny_folder, tiny_seed2_folder):
    shutil.copy(NOTEBOOKS / "prompt_lab.ipynb", tmp_path / "prompt_lab.ipynb")
    nb = json.loads((tmp_path / "prompt_lab.ipynb").read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    grid = grid_of(nb)
    out = tmp_path / "results"
    env = {"WEBLLM_WIDGET_MODEL": str(tiny_folder), "PROMPT_LAB_MODEL_B": str(tiny_seed2_folder),
           "PROMPT_LAB_OUT": str(out)}

    with JupyterLab(tmp_path, env=env) as lab:
        page = lab.open_notebook(chromium, "prompt_lab.ipynb")
        lab.run_all(page)
        rows = lab.wait_for_file(out / "prompt_lab.json", timeout=2400, page=page)
        outs = wait_notebook(lab, page, len(code_cells), timeout=300)  # raises on any error output
        exec_counts = page.evaluate("""() => {
            const nb = window.jupyterapp.shell.currentWidget.content.model;
            return [...Array(nb.cells.length).keys()].map(i => nb.cells.get(i))
                .filter(c => c.type === 'code').map(c => c.toJSON().execution_count);
        }""")
        console_errors = lab.console_errors()

    # every code cell ran (in order) and none raised
    assert len(exec_counts) == len(code_cells) and all(isinstance(n, int) for n in exec_counts), exec_counts
    assert exec_counts == sorted(exec_counts), exec_counts
    for i in code_cells:
        assert all(o.get("output_type") != "error" for o in outs[i]), outs[i]
    table_cell = next(i for i in code_cells if "pd.DataFrame(rows)" in "".join(nb["cells"][i]["source"]))
    assert any("text/html" in o.get("data", {}) for o in outs[table_cell]), "the table was not displayed"
    plot_cell = next(i for i in code_cells if "plt.subplots" in "".join(nb["cells"][i]["source"]))
    assert any("image/png" in o.get("data", {}) for o in outs[plot_cell]), "the plot was not displayed"
    assert not [m for m in console_errors if "Uncaught" in m or m.startswith("pageerror")], console_errors

    # one row per (system prompt, temperature, prompt), each with the table's columns and a real answer
    expected = {(s, float(t), p) for (s, _), t, (p, _) in itertools.product(
        grid["SYSTEM_PROMPTS"].items(), grid["TEMPERATURES"], grid["PROMPTS"].items())}
    assert len(rows) == len(expected), rows
    assert {(r["system"], float(r["temperature"]), r["prompt"]) for r in rows} == expected
    for r in rows:
        assert set(r) == COLUMNS, r
        assert isinstance(r["answer"], str) and r["answer"].strip(), r
        assert isinstance(r["tokens"], int) and r["tokens"] > 0, r
        assert isinstance(r["decode tok/s"], (int, float)) and r["decode tok/s"] > 0, r
        assert isinstance(r["correct"], bool), r

    # the JSON schema answer through chat.openai: its finished JSON validates; cut at max_tokens it opens an object
    st = json.loads((out / "structured.json").read_text())
    assert st["model"].startswith("tiny-llama-seed0"), st
    if st["finish_reason"] == "stop":
        assert set(json.loads(st["content"])) == {"country", "city"} and st["parsed"], st
    else:
        assert st["finish_reason"] == "length" and st["content"].lstrip().startswith("{") and st["parsed"] is None, st
    # two models side by side with Chat.batch: A's answers are its grid answers (terse, temperature 0, seed 0),
    # B (another model) answers otherwise
    sb = json.loads((out / "side_by_side.json").read_text())
    assert sb["models"] == [str(tiny_folder), str(tiny_seed2_folder)], sb["models"]
    terse = {r["prompt"]: r["answer"] for r in rows if r["system"] == "terse" and float(r["temperature"]) == 0.0}
    assert [r["prompt"] for r in sb["a"]] == list(grid["PROMPTS"]) == [r["prompt"] for r in sb["b"]]
    assert all(r["error"] is None and r["answer"] for r in sb["a"] + sb["b"]), sb
    assert [r["answer"] for r in sb["a"]] == [terse[p] for p in grid["PROMPTS"]], (sb["a"], terse)
    assert [r["answer"] for r in sb["a"]] != [r["answer"] for r in sb["b"]], sb
    side_cell = next(i for i in code_cells if "chat_b.batch" in "".join(nb["cells"][i]["source"]))
    assert any("text/html" in o.get("data", {}) for o in outs[side_cell]), "the side-by-side table was not displayed"

    png = (out / "prompt_lab.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000, len(png)
