// Writes src/webllm_widget/models/prebuilt.json from the pinned web-llm's prebuiltAppConfig: the ids the kernel
// accepts, and what the model picker tells before a model is picked (GPU memory, features, where it is fetched
// from, so the page can see whether it is cached). Run after moving the web-llm pin: `node scripts/prebuilt_list.mjs`.
import { writeFileSync, readFileSync } from "node:fs";
import { prebuiltAppConfig } from "@mlc-ai/web-llm";

const pkg = JSON.parse(readFileSync(new URL("../node_modules/@mlc-ai/web-llm/package.json", import.meta.url)));
const models = prebuiltAppConfig.model_list.map((m) => ({
  id: m.model_id,
  vram_MB: m.vram_required_MB ?? null,
  low_resource: Boolean(m.low_resource_required),
  embedding: m.model_type === 1,
  model: m.model,
  model_lib: m.model_lib,
  ...(m.required_features?.length ? { required_features: m.required_features } : {}),
  ...(m.overrides && Object.keys(m.overrides).length ? { overrides: m.overrides } : {}),
}));
const doc = { source: `@mlc-ai/web-llm@${pkg.version} prebuiltAppConfig.model_list (js/scripts/prebuilt_list.mjs)`, models };
writeFileSync(new URL("../../src/webllm_widget/models/prebuilt.json", import.meta.url), JSON.stringify(doc, null, 1) + "\n");
console.log(`${models.length} models`);
