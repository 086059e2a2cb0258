// The chat view's CSS, scoped under .wlw-chat. Colours, fonts and radii come from JupyterLab's theme variables
// (--jp-*), so the widget follows the light and dark themes; the fallbacks (light, or dark where the page prefers
// it) serve hosts without them (VS Code, Colab, plain pages).
export const CSS = `
.wlw-chat {
  --wlw-bg: var(--jp-layout-color1, #fff); --wlw-bg2: var(--jp-layout-color2, #eee); --wlw-bg0: var(--jp-layout-color0, #fff);
  --wlw-fg: var(--jp-ui-font-color1, rgba(0,0,0,.87)); --wlw-fg0: var(--jp-ui-font-color0, rgba(0,0,0,1));
  --wlw-fg2: var(--jp-ui-font-color2, rgba(0,0,0,.54)); --wlw-border: var(--jp-border-color1, #bdbdbd);
  --wlw-border2: var(--jp-border-color2, #e0e0e0); --wlw-brand: var(--jp-brand-color1, #1976d2);
  --wlw-error: var(--jp-error-color1, #d32f2f); --wlw-success: var(--jp-success-color1, #388e3c);
  --wlw-code-bg: var(--jp-cell-editor-background, #f7f7f7); --wlw-input-bg: var(--jp-input-background, var(--wlw-bg));
  --wlw-radius: var(--jp-border-radius, 2px);
  font: var(--jp-ui-font-size1, 13px)/1.45 var(--jp-ui-font-family, system-ui, -apple-system, "Segoe UI", sans-serif);
  color: var(--wlw-fg); background: var(--wlw-bg); border: 1px solid var(--wlw-border2); border-radius: 4px;
  display: flex; flex-direction: column; max-width: 860px; }
@media (prefers-color-scheme: dark) {
  .wlw-chat { --wlw-bg: var(--jp-layout-color1, #1e1e1e); --wlw-bg2: var(--jp-layout-color2, #2b2b2b);
    --wlw-bg0: var(--jp-layout-color0, #111); --wlw-fg: var(--jp-ui-font-color1, rgba(255,255,255,.87));
    --wlw-fg0: var(--jp-ui-font-color0, #fff); --wlw-fg2: var(--jp-ui-font-color2, rgba(255,255,255,.54));
    --wlw-border: var(--jp-border-color1, #616161); --wlw-border2: var(--jp-border-color2, #424242);
    --wlw-code-bg: var(--jp-cell-editor-background, #2a2a2a); }
}
.wlw-chat button, .wlw-chat select, .wlw-chat input, .wlw-chat textarea {
  font: inherit; color: var(--wlw-fg0); background: var(--wlw-input-bg); border: 1px solid var(--wlw-border);
  border-radius: var(--wlw-radius); }
.wlw-chat button { background: var(--wlw-bg2); padding: 2px 10px; cursor: pointer; min-height: 26px; }
.wlw-chat button:hover:not(:disabled) { border-color: var(--wlw-brand); }
.wlw-chat button:disabled, .wlw-chat select:disabled { opacity: .5; cursor: default; }
.wlw-chat :focus-visible { outline: 2px solid var(--wlw-brand); outline-offset: 1px; }
.wlw-chat .wlw-send { background: var(--wlw-brand); border-color: var(--wlw-brand); color: var(--jp-ui-inverse-font-color0, #fff); }
.wlw-chat progress { accent-color: var(--wlw-brand); }
.wlw-head { display: flex; gap: 8px; align-items: center; padding: 6px 8px; border-bottom: 1px solid var(--wlw-border2); flex-wrap: wrap; }
.wlw-title { font-weight: 600; color: var(--wlw-fg0); }
.wlw-model { max-width: 420px; }
.wlw-model option[data-fits="no"] { color: var(--wlw-error); }
.wlw-status { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: color-mix(in srgb, var(--wlw-fg2) 20%, transparent); }
.wlw-status[data-status="ready"] { background: color-mix(in srgb, var(--wlw-success) 25%, transparent); }
.wlw-status[data-status="loading"], .wlw-status[data-status="generating"], .wlw-status[data-status="swapping"] { background: color-mix(in srgb, var(--wlw-brand) 25%, transparent); }
.wlw-status[data-status="error"], .wlw-status[data-status="disconnected"] { background: color-mix(in srgb, var(--wlw-error) 30%, transparent); }
.wlw-notice { font-size: 11px; color: var(--wlw-fg2); padding: 2px 8px; }
.wlw-gpu-name { font-size: 11px; color: var(--wlw-fg2); margin-left: auto; }
.wlw-progress, .wlw-batch { padding: 6px 8px; }
.wlw-progress progress, .wlw-batch progress { width: 100%; }
.wlw-progress-text, .wlw-batch-text { font-size: 11px; color: var(--wlw-fg2); }
.wlw-messages { overflow-y: auto; max-height: 420px; min-height: 60px; padding: 6px 8px; display: flex; flex-direction: column; gap: 4px; }
.wlw-turn { display: flex; flex-direction: column; max-width: 92%; }
.wlw-turn-user { align-self: flex-end; align-items: flex-end; }
.wlw-turn-assistant { align-self: flex-start; align-items: flex-start; }
.wlw-msg { padding: 6px 9px; border-radius: 8px; overflow-wrap: anywhere; max-width: 100%; color: var(--wlw-fg0); }
.wlw-user { background: color-mix(in srgb, var(--wlw-brand) 16%, var(--wlw-bg)); }
.wlw-assistant { background: var(--wlw-bg2); }
.wlw-msg-actions { display: flex; gap: 2px; opacity: 0; transition: opacity .1s; min-height: 20px; }
.wlw-turn:hover .wlw-msg-actions, .wlw-msg-actions:focus-within { opacity: 1; }
.wlw-msg-actions button { font-size: 11px; padding: 0 6px; min-height: 18px; background: transparent; border-color: transparent; color: var(--wlw-fg2); }
.wlw-msg-actions button[data-copied="yes"] { color: var(--wlw-success); }
.wlw-edit { display: flex; flex-direction: column; gap: 4px; min-width: 320px; }
.wlw-edit textarea { resize: vertical; }
.wlw-edit button { align-self: flex-end; }
.wlw-body p { margin: 0 0 .4em; }
.wlw-body p:last-child { margin-bottom: 0; }
.wlw-body pre { position: relative; background: var(--wlw-code-bg); border: 1px solid var(--wlw-border2); padding: 6px 8px; border-radius: 4px; overflow-x: auto; margin: .3em 0; }
.wlw-body code { font-family: var(--jp-code-font-family, ui-monospace, "SF Mono", Menlo, monospace); font-size: var(--jp-code-font-size, 12px); }
.wlw-body :not(pre) > code { background: var(--wlw-code-bg); padding: 0 3px; border-radius: 3px; }
.wlw-body ul, .wlw-body ol { margin: .2em 0; padding-left: 1.5em; }
.wlw-body blockquote { margin: .2em 0; padding-left: 8px; border-left: 3px solid var(--wlw-border); color: var(--wlw-fg2); }
.wlw-body a { color: var(--jp-content-link-color, var(--wlw-brand)); }
.wlw-body h3, .wlw-body h4, .wlw-body h5, .wlw-body h6 { margin: .4em 0 .2em; }
.wlw-copy-code { position: absolute; top: 3px; right: 3px; font-size: 10px !important; padding: 0 5px !important; min-height: 16px !important; opacity: .6; }
.wlw-copy-code::before { content: "Copy"; }
.wlw-copy-code[data-copied="yes"]::before { content: "Copied"; }
.wlw-copy-code[data-copied="no"]::before { content: "Copy failed"; }
.wlw-body pre:hover .wlw-copy-code, .wlw-copy-code:focus { opacity: 1; }
.wlw-body table { border-collapse: collapse; margin: .3em 0; }
.wlw-body th, .wlw-body td { border: 1px solid var(--wlw-border2); padding: 2px 6px; }
.wlw-body th { background: var(--wlw-bg2); }
.wlw-align-right { text-align: right; } .wlw-align-center { text-align: center; }
.wlw-body .hljs-keyword, .wlw-body .hljs-built_in, .wlw-body .hljs-literal { color: var(--jp-mirror-editor-keyword-color, #008000); font-weight: 600; }
.wlw-body .hljs-string { color: var(--jp-mirror-editor-string-color, #ba2121); }
.wlw-body .hljs-number { color: var(--jp-mirror-editor-number-color, #080); }
.wlw-body .hljs-comment { color: var(--jp-mirror-editor-comment-color, #408080); font-style: italic; }
.wlw-body .hljs-title, .wlw-body .hljs-title.function_ { color: var(--jp-mirror-editor-def-color, #00f); }
.wlw-body .hljs-attr, .wlw-body .hljs-variable, .wlw-body .hljs-params { color: var(--jp-mirror-editor-variable-color, inherit); }
.wlw-body .hljs-meta, .wlw-body .hljs-tag { color: var(--jp-mirror-editor-meta-color, #aa22ff); }
.wlw-img-alt { font-style: italic; color: var(--wlw-fg2); }
.wlw-error { color: var(--wlw-error); background: color-mix(in srgb, var(--wlw-error) 10%, transparent); margin: 0 8px 6px; padding: 6px 8px; border-radius: 4px; white-space: pre-wrap; }
.wlw-settings, .wlw-storage { padding: 0 8px; }
.wlw-storage summary { cursor: pointer; font-size: 12px; color: var(--wlw-fg2); padding: 2px 0; }
.wlw-storage-top { display: flex; gap: 8px; align-items: center; font-size: 12px; color: var(--wlw-fg2); padding: 2px 0; }
.wlw-storage-usage { flex: 1; }
.wlw-cache-list { list-style: none; margin: 0; padding: 0 0 6px; font-size: 12px; }
.wlw-cache-row { display: flex; gap: 8px; align-items: center; padding: 2px 0; border-top: 1px solid var(--wlw-border2); }
.wlw-cache-name { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.wlw-cache-size { color: var(--wlw-fg2); }
.wlw-storage-message { font-size: 12px; color: var(--wlw-fg2); padding-bottom: 4px; }
.wlw-settings summary { cursor: pointer; font-size: 12px; color: var(--wlw-fg2); padding: 2px 0; }
.wlw-settings-form { display: grid; grid-template-columns: repeat(4, minmax(90px, 1fr)); gap: 6px 10px; padding: 4px 0 6px; }
.wlw-field { display: flex; flex-direction: column; font-size: 11px; color: var(--wlw-fg2); gap: 2px; }
.wlw-field-wide { grid-column: 1 / -1; }
.wlw-field textarea { resize: vertical; }
.wlw-input-row { display: flex; gap: 6px; padding: 6px 8px; border-top: 1px solid var(--wlw-border2); }
.wlw-input { flex: 1; resize: vertical; }
.wlw-foot { display: flex; gap: 6px; align-items: center; padding: 0 8px 6px; }
.wlw-foot button { font-size: 11px; min-height: 20px; padding: 0 6px; }
.wlw-stats { font-size: 11px; color: var(--wlw-fg2); min-height: 1em; flex: 1; }
`;
