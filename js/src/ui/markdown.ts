// Markdown to DOM for untrusted text (model output, user input): nodes are built with createElement and
// textContent only, so markup in the text stays text. Links are kept only for http(s) URLs; images are
// not loaded (shown as their alt text) so a message cannot make the page fetch anything.

const SAFE_URL = /^https?:\/\/[^\s]+$/i;

/** The URL if it is an absolute http(s) URL, else null (javascript:, data:, relative, ...). */
export function safeHref(url: string): string | null {
  const u = url.trim();
  if (!SAFE_URL.test(u)) return null;
  try {
    const parsed = new URL(u);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// Inline spans, in priority order. Each regex is tried at every position; the earliest match wins.
const INLINE: { re: RegExp; make: (m: RegExpExecArray) => Node }[] = [
  { re: /`([^`\n]+)`/, make: (m) => el("code", m[1]) },
  {
    re: /!\[([^\]\n]*)\]\(([^)\s]*)\)/,
    make: (m) => el("span", `[image: ${m[1] || "no description"}]`, "wlw-img-alt"),
  },
  {
    re: /\[([^\]\n]+)\]\(([^)\s]*)(?:\s+"[^"]*")?\)/,
    make: (m) => {
      const href = safeHref(m[2]);
      if (!href) return document.createTextNode(m[0]); // not a web link: keep the source text, inert
      const a = document.createElement("a");
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      inline(a, m[1]);
      return a;
    },
  },
  { re: /\*\*([^*\n]+)\*\*|__([^_\n]+)__/, make: (m) => withInline("strong", m[1] ?? m[2]) },
  { re: /\*([^*\n]+)\*|(?<![A-Za-z0-9])_([^_\n]+)_(?![A-Za-z0-9])/, make: (m) => withInline("em", m[1] ?? m[2]) },
  { re: /~~([^~\n]+)~~/, make: (m) => withInline("del", m[1]) },
];

function el(tag: string, text?: string, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function withInline(tag: string, text: string): HTMLElement {
  const e = document.createElement(tag);
  inline(e, text);
  return e;
}

/** Append `text` to `parent` with inline markdown applied. */
export function inline(parent: Node, text: string): void {
  let rest = text;
  while (rest.length) {
    let best: { idx: number; m: RegExpExecArray; make: (m: RegExpExecArray) => Node } | null = null;
    for (const { re, make } of INLINE) {
      const m = re.exec(rest);
      if (m && (best === null || m.index < best.idx)) best = { idx: m.index, m, make };
    }
    if (!best) {
      parent.appendChild(document.createTextNode(rest));
      return;
    }
    if (best.idx > 0) parent.appendChild(document.createTextNode(rest.slice(0, best.idx)));
    parent.appendChild(best.make(best.m));
    rest = rest.slice(best.idx + best.m[0].length);
  }
}

/** Render markdown `text` into a fragment of inert DOM nodes. An unclosed code fence (while streaming) is a code block. */
export function renderMarkdown(text: string): DocumentFragment {
  const frag = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  let para: string[] = [];
  const flush = () => {
    if (para.length) {
      const p = el("p");
      para.forEach((l, k) => {
        if (k) p.appendChild(document.createElement("br"));
        inline(p, l);
      });
      frag.appendChild(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const body: string[] = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // closing fence (or end of text)
      const pre = el("pre");
      const code = el("code", body.join("\n"));
      if (fence[2]) {
        code.className = `language-${fence[2].replace(/[^\w+#.-]/g, "")}`;
        pre.dataset.lang = fence[2];
      }
      pre.appendChild(code);
      frag.appendChild(pre);
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      frag.appendChild(withInline(`h${Math.min(heading[1].length + 2, 6)}`, heading[2]));
      i++;
      continue;
    }
    if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      frag.appendChild(el("hr"));
      i++;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered) (list as HTMLOListElement).start = parseInt(item[1], 10) || 1;
      while (i < lines.length) {
        const m = /^\s*([-*+]|\d+[.)])\s+(.*)$/.exec(lines[i]);
        if (!m || /\d/.test(m[1]) !== ordered) break;
        list.appendChild(withInline("li", m[2]));
        i++;
      }
      frag.appendChild(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      flush();
      const quoted: string[] = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
      const bq = el("blockquote");
      bq.appendChild(renderMarkdown(quoted.join("\n")));
      frag.appendChild(bq);
      continue;
    }
    if (!line.trim()) {
      flush();
      i++;
      continue;
    }
    para.push(line);
    i++;
  }
  flush();
  return frag;
}
