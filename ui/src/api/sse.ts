/** Server-Sent Events over fetch: EventSource cannot send the bearer token, so the stream is read by hand. */
import { rawFetch } from "./client";

export interface SseMessage {
  event: string;
  data: string;
  id: string | null;
}

/** Reads `path` as an SSE stream until it ends or `signal` aborts; resolves with the last event id seen. */
export async function readSse(
  path: string,
  onMessage: (m: SseMessage) => void,
  opts: { signal: AbortSignal; lastEventId?: string | null },
): Promise<string | null> {
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  if (opts.lastEventId) headers["Last-Event-ID"] = opts.lastEventId;
  const response = await rawFetch(path, { headers, signal: opts.signal });
  if (!response.body) throw new Error("the log stream has no body");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let lastId = opts.lastEventId ?? null;
  let buffer = "";
  let event = "message";
  let data: string[] = [];
  let id: string | null = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return lastId;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop() ?? "";
    for (const line of lines) {
      if (line === "") {
        if (data.length) {
          if (id !== null) lastId = id;
          onMessage({ event, data: data.join("\n"), id });
        }
        event = "message";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event = val;
      else if (field === "data") data.push(val);
      else if (field === "id") id = val;
    }
  }
}
