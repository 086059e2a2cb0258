"""Bad model id, unreachable URL, missing file: a named error within seconds, no retry storm, and a good
load afterwards works in the same widget."""
from __future__ import annotations

import pytest

from webllm_widget.errors import BadArtifact, BadModel, ModelUnreachable

from browser import free_port
from rel_host import copy_model

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def chat(rel, tiny_folder):
    return rel.chat(tiny_folder, temperature=0, max_tokens=3)


def _answers(rel, chat) -> str:
    """The next normal request: a good load (of the model the page already has) and an answer."""
    async def go():
        await chat.load(str(rel.good))
        return await chat.ask("hello")
    text = rel.run(go())
    assert chat.status == "ready" and chat.error == {}
    assert chat.messages[-1] == {"role": "assistant", "content": text}
    return text


@pytest.fixture(autouse=True)
def _good(rel, tiny_folder):
    rel.good = tiny_folder


def test_an_unknown_model_id_raises_bad_model_at_once(rel, chat):
    async def go():
        with pytest.raises(BadModel) as e:
            chat.load("no-such-model-q4f32_1-MLC")
        return e.value
    err = rel.run(go(), timeout=30)
    assert err.code == "bad-model" and "no-such-model-q4f32_1-MLC" in str(err)
    assert chat.status == "error" and chat.error["code"] == "bad-model"
    _answers(rel, chat)


def test_a_folder_missing_a_file_names_it_before_sending_anything(rel, chat, tiny_folder, tmp_path):
    bad = copy_model(tiny_folder, tmp_path / "no-tokenizer")
    (bad / "tokenizer.json").unlink()
    sent = chat.bytes_sent

    async def go():
        with pytest.raises(BadModel) as e:
            chat.load(str(bad))
        return e.value
    err = rel.run(go(), timeout=30)
    assert err.code == "bad-model" and "tokenizer.json" in str(err) and err.detail["file"] == "tokenizer.json"
    assert chat.bytes_sent == sent and chat.error["code"] == "bad-model"
    _answers(rel, chat)


def test_an_unreachable_url_raises_unreachable_after_one_request(rel, chat):
    url = f"http://127.0.0.1:{free_port()}/nothing-listens"
    before = len(rel.requests)

    async def go():
        with pytest.raises(ModelUnreachable) as e:
            await chat.load(url)
        return e.value
    err = rel.run(go(), timeout=60)
    assert err.code == "unreachable" and "mlc-chat-config.json" in str(err)
    tried = [u for u in rel.seen_requests()[before:] if "nothing-listens" in u]
    assert len(tried) == 1, tried  # no retry storm
    assert chat.status == "error"
    _answers(rel, chat)


def test_a_url_without_a_model_folder_raises_bad_model_after_one_request(rel, chat, file_server, tiny_folder):
    url = file_server.add("empty", tiny_folder, skip=tuple(p.name for p in tiny_folder.iterdir()))

    async def go():
        with pytest.raises(BadModel) as e:
            await chat.load(url)
        return e.value
    err = rel.run(go(), timeout=60)
    assert err.code == "bad-model" and "HTTP 404" in str(err)
    assert file_server.hits("/empty/") == 1
    _answers(rel, chat)


def test_a_url_folder_missing_its_weights_fails_without_retries_and_a_good_url_loads_after(
        rel, chat, file_server, tiny_folder):
    bad = file_server.add("noshard", tiny_folder, skip=("params_shard_0.bin",))
    good = file_server.add("good", tiny_folder)

    async def go():
        with pytest.raises(BadArtifact) as e:
            await chat.load(bad)
        return e.value
    err = rel.run(go(), timeout=120)
    assert err.code == "bad-artifact"
    assert file_server.hits("/noshard/resolve/main/params_shard_0.bin") <= 2  # web-llm fetches once; no storm
    assert len(file_server.log) < 20, file_server.log

    async def good_load():
        await chat.load(good)
        return await chat.ask("hello")
    text = rel.run(good_load(), timeout=300)
    assert chat.status == "ready" and chat.messages[-1]["content"] == text
    assert file_server.hits("/good/resolve/main/params_shard_0.bin") >= 1
