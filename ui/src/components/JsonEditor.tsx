/** A JSON textarea whose 422 errors are shown at the field: each issue names its path and the line it is on,
 * and clicking it selects that value in the text. */
import { useRef } from "react";
import { ApiError } from "../api/errors";
import { locate, parseErrorLine } from "../lib/jsonpath";

export interface ParseProblem {
  message: string;
  line: number | null;
}

/** Parses the editor's text, or says where it is not JSON. */
export function parseJson(text: string): { value: unknown; problem: null } | { value: null; problem: ParseProblem } {
  try {
    return { value: JSON.parse(text) as unknown, problem: null };
  } catch (e) {
    return { value: null, problem: { message: e instanceof Error ? e.message : String(e), line: parseErrorLine(text, e) } };
  }
}

interface Props {
  value: string;
  onChange: (text: string) => void;
  /** the last submit's error; its 422 issues under `prefix` are shown here */
  error?: unknown;
  /** the body path of this JSON in the request (`task` for a schedule's task), "" for the whole body */
  prefix?: string;
  problem?: ParseProblem | null;
  rows?: number;
  testid: string;
  label: string;
}

export function JsonEditor({ value, onChange, error, prefix = "", problem, rows = 16, testid, label }: Props) {
  const area = useRef<HTMLTextAreaElement>(null);
  const issues =
    error instanceof ApiError && error.status === 422
      ? error.issues.filter((i) => !prefix || i.path === prefix || i.path.startsWith(prefix + "."))
      : [];
  const select = (start: number, end: number) => {
    const el = area.current;
    if (!el) return;
    el.focus();
    el.setSelectionRange(start, end);
  };
  const invalid = issues.length > 0 || !!problem;
  return (
    <div className={invalid ? "field invalid" : "field"} data-field={prefix || "body"}>
      <span className="label">{label}</span>
      <textarea
        ref={area}
        className="code"
        rows={rows}
        spellCheck={false}
        value={value}
        onChange={(e) => onChange(e.target.value)}
        data-testid={testid}
        aria-invalid={invalid}
      />
      {problem && (
        <span className="field-error" role="alert" data-testid="json-parse-error">
          Not valid JSON{problem.line ? ` (line ${problem.line})` : ""}: {problem.message}
        </span>
      )}
      {issues.length > 0 && (
        <ul className="issues" role="alert" data-testid="field-errors">
          {issues.map((issue, k) => {
            const rel = prefix ? issue.path.slice(prefix.length).replace(/^\./, "") : issue.path;
            const at = locate(value, rel);
            return (
              <li key={k} className="field-error" data-testid="field-error" data-path={issue.path}>
                <button type="button" className="link" onClick={() => at && select(at.start, at.end)} disabled={!at}>
                  {(at ? [prefix, at.field].filter(Boolean).join(".") : issue.path) || "body"}
                  {at ? ` (line ${at.line})` : ""}
                </button>
                : {issue.message}
              </li>
            );
          })}
        </ul>
      )}
    </div>
  );
}
