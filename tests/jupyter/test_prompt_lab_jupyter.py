"""JupyterLab end to end: notebooks/prompt_lab.ipynb (system prompts x temperatures x prompts) with the tiny model.

Real JupyterLab, real kernel, real Chat widget, the tiny random-weight Llama on SwiftShader WebGPU: the answers
are noise, so this checks the machinery (every run of the grid answered, the table and the plot were made), not
the content.
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


def test_prompt_lab_notebook_answers_every_grid_cell_in_jupyterlab(chromium, tmp_path, tiny_folder):
    shutil.copy(NOTEBOOKS / "prompt_lab.ipynb", tmp_path / "prompt_lab.ipynb")
    nb = json.loads((tmp_path / "prompt_lab.ipynb").read_text())
    code_cells = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    grid = grid_of(nb)
    out = tmp_path / "results"
    env = {"WEBLLM_WIDGET_MODEL": str(tiny_folder), "PROMPT_LAB_OUT": str(out)}

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

    png = (out / "prompt_lab.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000, len(png)
