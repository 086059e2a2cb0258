"""``await chat.batch(prompts)`` in real headless Chromium with the tiny compiled Llama: one record per prompt,
each answer what a fresh run of that prompt alone gives, progress in the kernel (tqdm) and in the widget, and
the widget's Stop ends the batch."""
from __future__ import annotations

import asyncio

import pytest

from webllm_widget import Chat

pytestmark = pytest.mark.browser

WATCH_BATCH = """() => {
  window.__batchSeen = [];
  const tick = () => {
    const box = document.querySelector('.wlw-chat .wlw-batch');
    if (box && !box.hidden) {
      const t = box.textContent;
      if (window.__batchSeen[window.__batchSeen.length - 1] !== t) window.__batchSeen.push(t);
    }
  };
  setInterval(tick, 20);
}"""


def test_batch_answers_each_prompt_alone_with_progress_and_the_widgets_stop_ends_it(widget_host, tiny_folder, capfd):
    page = widget_host.page

    async def load():
        chat = Chat(model=str(tiny_folder), system_prompt="Be brief.", temperature=0, max_tokens=3)
        await chat.ready(timeout=300)
        return chat
    chat = widget_host.run(load())
    page.evaluate(WATCH_BATCH)

    async def go():
        records = await chat.batch(["name a colour", "name a fruit"], seed=1)
        fresh = [await chat.complete([{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}])
                 for p in ("name a colour", "name a fruit")]
        return records, fresh
    records, fresh = widget_host.run(go())
    assert [r["prompt"] for r in records] == ["name a colour", "name a fruit"]
    for r, f in zip(records, fresh):
        assert r["answer"] == f["choices"][0]["message"]["content"]
        assert r["finish_reason"] == f["choices"][0]["finish_reason"] and r["error"] is None
        # the same counts; how many prompt tokens were already in the KV cache depends on what ran before
        counts = ("prompt_tokens", "completion_tokens", "total_tokens")
        assert [r["usage"][k] for k in counts] == [f["usage"][k] for k in counts] and r["usage"]["completion_tokens"] >= 1
        assert r["timings"]["decode_tokens_per_s"] > 0
    assert chat.messages == [] and chat.batch_progress == {}
    seen = page.evaluate("() => window.__batchSeen")
    assert "batch: 0 of 2 prompts answered" in seen and "batch: 1 of 2 prompts answered" in seen, seen
    page.wait_for_function("() => document.querySelector('.wlw-chat .wlw-batch').hidden")
    assert "2/2" in capfd.readouterr().err  # tqdm's bar in the kernel

    # the widget's Stop ends the answer in flight and the batch: later prompts are not run
    async def start():
        return asyncio.ensure_future(chat.batch(["one", "two", "three"], max_tokens=40, progress=False))
    fut = widget_host.run(start())

    async def second_is_streaming():
        for _ in range(6000):
            b = chat._batch
            if b is not None and chat.batch_progress.get("done") == 1 and b.current is not None and b.current.tokens:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(chat.batch_progress)
    widget_host.run(second_is_streaming())
    page.click(".wlw-chat .wlw-stop")

    async def result():
        return await fut
    records = widget_host.run(result())
    assert [r["finish_reason"] for r in records][1:] == ["abort", "not-run"]
    assert records[1]["answer"] and records[2]["answer"] is None
    assert chat.status == "ready" and chat.batch_progress == {}
    with pytest.raises(TypeError, match="not one string"):
        widget_host.run(chat.batch("one prompt"))
