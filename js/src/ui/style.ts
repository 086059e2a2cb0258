// The chat view's CSS, scoped under .wlw-chat; colors follow JupyterLab's theme variables when present.
export const CSS = `
.wlw-chat { font: 13px/1.45 var(--jp-ui-font-family, system-ui, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color1, #ccc); border-radius: 6px; display: flex; flex-direction: column;
  max-width: 860px; background: var(--jp-layout-color1, #fff); }
.wlw-head { display: flex; gap: 8px; align-items: center; padding: 6px 8px; border-bottom: 1px solid var(--jp-border-color2, #ddd); flex-wrap: wrap; }
.wlw-title { font-weight: 600; }
.wlw-model { max-width: 320px; }
.wlw-status { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #8882; }
.wlw-status[data-status="ready"] { background: #2e7d3233; }
.wlw-status[data-status="loading"], .wlw-status[data-status="generating"] { background: #1565c033; }
.wlw-status[data-status="error"] { background: #c6282844; }
.wlw-gpu-name { font-size: 11px; opacity: .75; margin-left: auto; }
.wlw-progress { padding: 6px 8px; }
.wlw-progress progress { width: 100%; }
.wlw-progress-text { font-size: 11px; opacity: .8; }
.wlw-messages { overflow-y: auto; max-height: 420px; min-height: 60px; padding: 6px 8px; display: flex; flex-direction: column; gap: 6px; }
.wlw-msg { padding: 6px 9px; border-radius: 8px; max-width: 92%; overflow-wrap: anywhere; }
.wlw-user { align-self: flex-end; background: var(--jp-brand-color3, #dbe9f9); }
.wlw-assistant { align-self: flex-start; background: var(--jp-layout-color2, #f2f2f2); }
.wlw-body p { margin: 0 0 .4em; }
.wlw-body p:last-child { margin-bottom: 0; }
.wlw-body pre { background: #0000000f; padding: 6px 8px; border-radius: 4px; overflow-x: auto; margin: .3em 0; }
.wlw-body code { font-family: var(--jp-code-font-family, ui-monospace, monospace); font-size: 12px; }
.wlw-body :not(pre) > code { background: #0000000f; padding: 0 3px; border-radius: 3px; }
.wlw-body ul, .wlw-body ol { margin: .2em 0; padding-left: 1.5em; }
.wlw-body blockquote { margin: .2em 0; padding-left: 8px; border-left: 3px solid #8886; }
.wlw-body pre { position: relative; }
.wlw-copy-code { position: absolute; top: 3px; right: 3px; font-size: 10px; padding: 0 5px; opacity: .6; cursor: pointer; }
.wlw-copy-code::before { content: "Copy"; }
.wlw-copy-code[data-copied="yes"]::before { content: "Copied"; }
.wlw-copy-code[data-copied="no"]::before { content: "Copy failed"; }
.wlw-body pre:hover .wlw-copy-code, .wlw-copy-code:focus { opacity: 1; }
.wlw-body table { border-collapse: collapse; margin: .3em 0; }
.wlw-body th, .wlw-body td { border: 1px solid var(--jp-border-color2, #ccc); padding: 2px 6px; }
.wlw-align-right { text-align: right; } .wlw-align-center { text-align: center; }
.wlw-body .hljs-keyword, .wlw-body .hljs-built_in, .wlw-body .hljs-literal { color: var(--jp-mirror-editor-keyword-color, #008000); font-weight: 600; }
.wlw-body .hljs-string { color: var(--jp-mirror-editor-string-color, #ba2121); }
.wlw-body .hljs-number { color: var(--jp-mirror-editor-number-color, #080); }
.wlw-body .hljs-comment { color: var(--jp-mirror-editor-comment-color, #408080); font-style: italic; }
.wlw-body .hljs-title, .wlw-body .hljs-title.function_ { color: var(--jp-mirror-editor-def-color, #00f); }
.wlw-body .hljs-attr, .wlw-body .hljs-variable, .wlw-body .hljs-params { color: var(--jp-mirror-editor-variable-color, #212121); }
.wlw-body .hljs-meta, .wlw-body .hljs-tag { color: var(--jp-mirror-editor-meta-color, #aa22ff); }
.wlw-img-alt { font-style: italic; opacity: .8; }
.wlw-error { color: #b71c1c; background: #c628281a; margin: 0 8px 6px; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap; }
.wlw-input-row { display: flex; gap: 6px; padding: 6px 8px; border-top: 1px solid var(--jp-border-color2, #ddd); }
.wlw-input { flex: 1; resize: vertical; font: inherit; }
.wlw-stats { font-size: 11px; opacity: .75; padding: 0 8px 6px; min-height: 1em; }
`;
