/** Where a field named by a 422 (`steps.0.url`) sits in the JSON text a person typed, so the editor can point
 * at the line. Lenient: it maps what parses and stops at the first syntax error. */

export interface Span {
  start: number;
  end: number;
  line: number;
  /** the path in the text: the field itself, or its nearest parent when the field is missing */
  path: string;
  /** false when only a parent was found */
  exact: boolean;
  /** the field's path without union tags (`steps.0.url` for `steps.0.navigate.url`) */
  field: string;
}

function spans(text: string): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  let i = 0;
  const skipWs = () => {
    while (i < text.length && /\s/.test(text.charAt(i))) i++;
  };
  const skipString = () => {
    i++;
    while (i < text.length && text.charAt(i) !== '"') i += text.charAt(i) === "\\" ? 2 : 1;
    if (i >= text.length) throw new Error("unterminated string");
    i++;
  };
  const join = (path: string, key: string | number) => (path ? `${path}.${key}` : String(key));
  const value = (path: string): void => {
    skipWs();
    const start = i;
    const c = text.charAt(i);
    if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      skipWs();
      if (text.charAt(i) === close) i++;
      else {
        for (let index = 0; ; index++) {
          skipWs();
          let key: string | number = index;
          if (c === "{") {
            if (text.charAt(i) !== '"') throw new Error("key expected");
            const ks = i;
            skipString();
            key = JSON.parse(text.slice(ks, i)) as string;
            skipWs();
            if (text.charAt(i) !== ":") throw new Error("colon expected");
            i++;
          }
          value(join(path, key));
          skipWs();
          if (text.charAt(i) === ",") {
            i++;
            continue;
          }
          if (text.charAt(i) === close) {
            i++;
            break;
          }
          throw new Error("comma expected");
        }
      }
    } else if (c === '"') skipString();
    else {
      while (i < text.length && /[^\s,\]}]/.test(text.charAt(i))) i++;
      if (i === start) throw new Error("value expected");
    }
    out.set(path, [start, i]);
  };
  try {
    value("");
  } catch {
    // keep what was mapped before the error
  }
  return out;
}

export function lineAt(text: string, offset: number): number {
  let line = 1;
  for (let k = 0; k < offset && k < text.length; k++) if (text.charCodeAt(k) === 10) line++;
  return line;
}

/** The discriminator values a validation path may carry: pydantic names the member of a tagged union in the
 * path (`steps.0.navigate.url` for `{"action": "navigate", ...}`), which is not a key of the JSON. */
const TAGS = ["action", "kind", "type"];

export function locate(text: string, path: string): Span | null {
  const map = spans(text);
  const parts = path ? path.split(".") : [];
  let found: string | null = map.has("") ? "" : null;
  let exact = true;
  const kept: string[] = [];
  let k = 0;
  for (; k < parts.length && found !== null; k++) {
    const next = found ? `${found}.${parts[k]}` : parts[k]!;
    if (map.has(next)) {
      found = next;
      kept.push(parts[k]!);
      continue;
    }
    const isTag = TAGS.some((tag) => {
      const at = map.get(found ? `${found}.${tag}` : tag);
      if (!at) return false;
      try {
        return JSON.parse(text.slice(at[0], at[1])) === parts[k];
      } catch {
        return false;
      }
    });
    if (isTag) continue;
    exact = false; // the field is missing: point at its nearest parent
    break;
  }
  if (found === null) return null;
  const hit = map.get(found)!;
  const field = [...kept, ...parts.slice(k)].join(".");
  return { start: hit[0], end: hit[1], line: lineAt(text, hit[0]), path: found, exact, field };
}

/** A JSON.parse error with its line, from V8's "at position N" or "(line L column C)". */
export function parseErrorLine(text: string, error: unknown): number | null {
  const msg = error instanceof Error ? error.message : String(error);
  const lc = /line (\d+) column (\d+)/.exec(msg);
  if (lc) return Number(lc[1]);
  const pos = /position (\d+)/.exec(msg);
  return pos ? lineAt(text, Number(pos[1])) : null;
}
