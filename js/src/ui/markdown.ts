// Markdown to DOM for untrusted text (model output, user input), with two walls between the text and the page:
// markdown-it parses with raw HTML off (markup in the text stays text), keeps links only for absolute http(s)
// URLs and shows images as their alt text (a message never makes the page fetch anything); DOMPurify then
// sanitizes the produced HTML against a short allow-list of tags and attributes before any of it becomes DOM.
// highlight.js (core, a few languages) colours fenced code; each code block gets a copy button.
import MarkdownIt from "markdown-it";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import cpp from "highlight.js/lib/languages/cpp";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";

hljs.registerLanguage("bash", bash);
hljs.registerLanguage("cpp", cpp);
hljs.registerLanguage("javascript", javascript);
hljs.registerLanguage("json", json);
hljs.registerLanguage("python", python);
hljs.registerLanguage("sql", sql);
hljs.registerLanguage("typescript", typescript);
hljs.registerLanguage("xml", xml);

const WEB_URL = /^https?:\/\/[^\s]+$/i;

/** The URL if it is an absolute http(s) URL, else null (javascript:, data:, relative, ...). */
export function safeHref(url: string): string | null {
  const u = url.trim();
  if (!WEB_URL.test(u)) return null;
  try {
    const parsed = new URL(u);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

const md = new MarkdownIt({
  html: false, // raw HTML in the text is shown as text
  linkify: false, // bare URLs stay text: a link is only what the text writes as one
  typographer: false, // keep the text's own characters
  breaks: true, // a chat's line breaks are meant
  highlight: (code, lang) => {
    const name = lang.trim().toLowerCase();
    if (!name || !hljs.getLanguage(name)) return ""; // markdown-it escapes it as plain code
    try {
      return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
    } catch {
      return "";
    }
  },
});
// A link or image whose URL fails this stays the text it was written as.
md.validateLink = (url: string) => safeHref(url) !== null;
// Images are not loaded: their alt text is shown instead.
md.renderer.rules.image = (tokens, idx, options, env, self) => {
  const alt = self.renderInlineAsText(tokens[idx].children ?? [], options, env);
  return `<span class="wlw-img-alt">[image: ${md.utils.escapeHtml(alt || "no description")}]</span>`;
};
// Line breaks as <br> alone, so the message's text (textContent) is the text without markup or breaks.
md.renderer.rules.softbreak = () => "<br>";
md.renderer.rules.hardbreak = () => "<br>";
md.core.ruler.push("wlw_chat_shape", (state) => {
  for (const tok of state.tokens) {
    // Code as written, without the newline CommonMark keeps before the closing fence.
    if (tok.type === "fence" || tok.type === "code_block") tok.content = tok.content.replace(/\n$/, "");
    // Headings two levels down: a message sits inside a notebook cell's output, under the notebook's own.
    if (tok.type === "heading_open" || tok.type === "heading_close") {
      tok.tag = `h${Math.min(6, Number(tok.tag.slice(1)) + 2)}`;
    }
    // Table cell alignment as a class (the sanitizer allows no style attribute).
    if (tok.type === "th_open" || tok.type === "td_open") {
      const style = tok.attrGet("style");
      if (style) {
        tok.attrs = (tok.attrs ?? []).filter(([k]) => k !== "style");
        const m = /text-align:(left|right|center)/.exec(String(style));
        if (m) tok.attrJoin("class", `wlw-align-${m[1]}`);
      }
    }
  }
  return true;
});

const PURIFY = {
  ALLOWED_TAGS: ["p", "br", "strong", "em", "del", "s", "code", "pre", "span", "a", "h3", "h4", "h5", "h6", "ul",
    "ol", "li", "blockquote", "hr", "table", "thead", "tbody", "tr", "th", "td"],
  ALLOWED_ATTR: ["href", "class", "start", "title"],
  ALLOWED_URI_REGEXP: /^https?:\/\//i,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true as const,
};

/** Copy `text` to the clipboard; `button` says whether it worked (data-copied = "yes" | "no") for a moment. */
export function copyText(text: string, button?: HTMLElement): Promise<boolean> {
  const mark = (ok: boolean) => {
    if (!button) return ok;
    button.dataset.copied = ok ? "yes" : "no";
    setTimeout(() => delete button.dataset.copied, 1500);
    return ok;
  };
  if (!navigator.clipboard?.writeText) return Promise.resolve(mark(false));
  return navigator.clipboard.writeText(text).then(() => mark(true), () => mark(false));
}

/** The HTML markdown-it makes of `text` with the rules above, before sanitizing (no DOM needed). */
export function markdownHtml(text: string): string {
  return md.render(text);
}

/** Render markdown `text` into a fragment of inert DOM nodes. An unclosed code fence (while streaming) is a code block. */
export function renderMarkdown(text: string): DocumentFragment {
  const frag = DOMPurify.sanitize(markdownHtml(text), PURIFY) as DocumentFragment;
  // The renderer's newlines between blocks are not the text's: drop them (code keeps its own).
  const walker = document.createTreeWalker(frag, NodeFilter.SHOW_TEXT);
  const drop: Node[] = [];
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (/^\n+$/.test(n.nodeValue ?? "") && !n.parentElement?.closest("pre")) drop.push(n);
  }
  drop.forEach((n) => n.parentNode?.removeChild(n));
  for (const a of frag.querySelectorAll("a")) {
    const href = safeHref(a.getAttribute("href") ?? "");
    if (!href) {
      a.replaceWith(...a.childNodes);
      continue;
    }
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
  }
  for (const pre of frag.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const lang = /language-([\w+#.-]+)/.exec(code?.className ?? "");
    if (lang) pre.dataset.lang = lang[1];
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "wlw-copy-code";
    btn.title = "Copy code";
    btn.setAttribute("aria-label", "Copy code");
    btn.addEventListener("click", () => void copyText(code?.textContent ?? "", btn));
    pre.prepend(btn);
  }
  return frag;
}
