// web-llm's own Worker handler (MLC's release): the engine runs here, the page talks to it by messages.
import { WebWorkerMLCEngineHandler } from "@mlc-ai/web-llm";

const handler = new WebWorkerMLCEngineHandler();
self.onmessage = (msg) => handler.onmessage(msg);
