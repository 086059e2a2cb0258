"""The conversation as Markdown, the same text the widget's "Export .md" writes (js/src/ui/export.ts)."""
from __future__ import annotations

import pytest

from webllm_widget import Chat
from webllm_widget.widgets.messages import to_markdown


def test_to_markdown_writes_one_section_per_message_with_the_system_prompt_first():
    msgs = [{"role": "user", "content": "Hi **there**"}, {"role": "assistant", "content": "Hello.\n\n- a\n- b"}]
    assert to_markdown("Be brief.", msgs) == (
        "## System\n\nBe brief.\n\n## User\n\nHi **there**\n\n## Assistant\n\nHello.\n\n- a\n- b\n")
    assert to_markdown("", msgs).startswith("## User\n\n")
    assert to_markdown("", []) == ""


def test_edit_refuses_an_index_that_is_not_a_user_message():
    chat = Chat(autoload=False)
    chat.messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(ValueError, match="not a user message"):
        chat.edit(1, "x")
    assert Chat(autoload=False).to_markdown() == ""
