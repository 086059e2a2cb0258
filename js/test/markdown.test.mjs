// Model output is untrusted: the markdown step keeps raw HTML as text, links only to http(s), never loads images.
// (DOMPurify, the second wall, needs a DOM: tests/reliability/test_untrusted_text.py checks it in the browser.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { markdownHtml, safeHref } from "../src/ui/markdown.ts";
import { conversationMarkdown } from "../src/ui/export.ts";

test("raw HTML in the text stays text", () => {
  const html = markdownHtml('<script>alert(1)</script> <img src=x onerror="alert(2)">');
  assert.doesNotMatch(html, /<script|<img/);
  assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
});

test("only absolute http(s) URLs become links; images show their alt text and load nothing", () => {
  assert.match(markdownHtml("[docs](https://example.com/a?b=1)"), /<a href="https:\/\/example\.com\/a\?b=1">docs<\/a>/);
  for (const bad of ["javascript:alert(1)", "data:text/html,<b>x</b>", "/relative", "vbscript:x"]) {
    assert.doesNotMatch(markdownHtml(`[click](${bad})`), /<a /, bad);
  }
  const img = markdownHtml("![a cat](https://example.com/cat.png)");
  assert.doesNotMatch(img, /<img/);
  assert.match(img, /<span class="wlw-img-alt">\[image: a cat\]<\/span>/);
  assert.equal(safeHref(" https://example.com/x "), "https://example.com/x");
  assert.equal(safeHref("HTTPS://EXAMPLE.COM"), "https://example.com/");
  assert.equal(safeHref("javascript:alert(1)"), null);
  assert.equal(safeHref("https://exa mple.com"), null);
});

test("the chat's shape: headings two levels down, line breaks kept, code as written and coloured", () => {
  assert.match(markdownHtml("# Title"), /^<h3>Title<\/h3>/);
  assert.match(markdownHtml("###### Deep"), /^<h6>Deep<\/h6>/);
  assert.match(markdownHtml("one\ntwo"), /one<br>two/);
  const py = markdownHtml("```python\ndef f():\n    return 1\n```");
  assert.match(py, /<pre><code class="language-python">/);
  assert.match(py, /<span class="hljs-keyword">def<\/span>/);
  assert.doesNotMatch(py, /\n<\/code>/); // no newline before the closing fence
  const unknown = markdownHtml("```nosuchlang\n<b>x</b>\n```");
  assert.match(unknown, /&lt;b&gt;x&lt;\/b&gt;/);
  // while streaming, an unclosed fence is already a code block
  assert.match(markdownHtml("```js\nlet a = 1"), /<pre><code class="language-js">/);
});

test("table alignment becomes a class (the sanitizer allows no style attribute)", () => {
  const html = markdownHtml("| a | b |\n|:--|--:|\n| 1 | 2 |");
  assert.doesNotMatch(html, /style=/);
  assert.match(html, /<th class="wlw-align-left">a<\/th>/);
  assert.match(html, /<td class="wlw-align-right">2<\/td>/);
});

test("the exported Markdown: one section per message, the system prompt first", () => {
  const md = conversationMarkdown([{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello" }], "Be brief.");
  assert.equal(md, "## System\n\nBe brief.\n\n## User\n\nHi\n\n## Assistant\n\nHello\n");
  assert.equal(conversationMarkdown([{ role: "system", content: "old" }, { role: "user", content: "Q" }], ""), "## User\n\nQ\n");
});
