// The last answer's tokens coloured by the model's probability for each (red: unsure, green: sure), with the top
// alternatives in a tooltip: for teaching and prompt work. Shown when the Chat's `show_token_probs` is on (the
// kernel and the page then ask every answer for logprobs with the top alternatives, engine/logprobs.ts).
// Tokens are model output: written with textContent and title only, never as HTML.
import type { TokenLogprob } from "../engine/logprobs";

/** Green for a sure token, through yellow, to red for an unlikely one. */
export function probColour(p: number): string {
  const hue = Math.round(120 * Math.max(0, Math.min(1, p)));
  return `hsl(${hue} 75% 80%)`;
}

const pct = (lp: number) => `${(100 * Math.exp(lp)).toFixed(1)}%`;

/** How a token shows: whitespace made visible so a space or newline token can be hovered. */
function shown(token: string): string {
  return token.replace(/\n/g, "\u21b5\n").replace(/\t/g, "\u2192") || "\u2205";
}

export class TokenProbsView {
  readonly root: HTMLElement;
  private body: HTMLElement;
  private shownFor: TokenLogprob[] | null = null;

  constructor(parent: HTMLElement) {
    this.root = document.createElement("div");
    this.root.className = "wlw-token-probs";
    this.root.hidden = true;
    const title = document.createElement("div");
    title.className = "wlw-token-probs-title";
    title.textContent = "Token probabilities of the last answer (hover a token for the alternatives)";
    this.body = document.createElement("div");
    this.body.className = "wlw-token-probs-body";
    this.body.style.cssText = "white-space: pre-wrap; font-family: var(--jp-code-font-family, monospace); font-size: 12px; line-height: 1.8;";
    title.style.cssText = "font-size: 11px; opacity: 0.75; margin: 6px 0 2px;";
    this.root.append(title, this.body);
    parent.append(this.root);
  }

  update(records: TokenLogprob[] | null, on: boolean): void {
    this.root.hidden = !on || !records || records.length === 0;
    if (this.root.hidden || records === this.shownFor) return;
    this.shownFor = records;
    this.body.replaceChildren(...records!.map((r) => {
      const span = document.createElement("span");
      span.className = "wlw-tok";
      const p = Math.exp(r.logprob);
      span.dataset.p = p.toFixed(4);
      span.textContent = shown(r.token);
      span.style.cssText = `background: ${probColour(p)}; color: #111; border-radius: 2px; padding: 0 1px; margin: 0 1px 0 0;`;
      const alts = (r.top_logprobs ?? []).map((a) => `${JSON.stringify(a.token)}  ${pct(a.logprob)}`);
      span.title = [`${JSON.stringify(r.token)}  ${pct(r.logprob)}`, ...(alts.length ? ["top alternatives:", ...alts] : [])].join("\n");
      return span;
    }));
  }
}
