import { useState, type FormEvent } from "react";
import { useNavigate } from "react-router";
import { api, call } from "../api/client";
import type { TaskCreate } from "../api/types";
import { JsonEditor, parseJson, type ParseProblem } from "../components/JsonEditor";
import { ErrorNote, Page } from "../components/ui";
import { randomId } from "../lib/format";

export const STEPS_TEMPLATE = JSON.stringify(
  {
    title: "Read the title of example.com",
    steps: [
      { action: "navigate", url: "https://example.com" },
      { action: "extract", name: "title", selector: "h1" },
      { action: "screenshot" },
    ],
    priority: "normal",
    timeout_seconds: 120,
  },
  null,
  2,
);

export const AGENT_TEMPLATE = JSON.stringify(
  {
    kind: "agent",
    title: "Find the heading",
    goal: "Open the page and report the text of its main heading.",
    agent: { start_url: "https://example.com", max_steps: 10, screenshots: true },
  },
  null,
  2,
);

/** Local checks before the API's own: JSON, an object, steps or a goal. The API's 422 names anything else. */
export function checkTaskShape(value: unknown): string | null {
  if (!value || typeof value !== "object" || Array.isArray(value)) return "The task must be a JSON object.";
  const v = value as Record<string, unknown>;
  const goal = v.goal ?? v.task;
  if (v.steps === undefined && goal === undefined) return 'Give either "steps" (a list) or "goal" (text for the agent).';
  if (v.steps !== undefined && !Array.isArray(v.steps)) return '"steps" must be a list of steps.';
  return null;
}

export function TaskNewPage() {
  const navigate = useNavigate();
  const [kind, setKind] = useState<"steps" | "agent">("steps");
  const [text, setText] = useState(STEPS_TEMPLATE);
  const [problem, setProblem] = useState<ParseProblem | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  // same body, same key: a double click or a retry after a timeout never creates the task twice
  const [key, setKey] = useState(randomId);

  const choose = (k: "steps" | "agent") => {
    setKind(k);
    if (text === STEPS_TEMPLATE || text === AGENT_TEMPLATE || !text.trim()) setText(k === "steps" ? STEPS_TEMPLATE : AGENT_TEMPLATE);
    setProblem(null);
    setError(null);
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    const parsed = parseJson(text);
    if (parsed.problem) {
      setProblem(parsed.problem);
      return;
    }
    const shape = checkTaskShape(parsed.value);
    if (shape) {
      setProblem({ message: shape, line: null });
      return;
    }
    setProblem(null);
    setBusy(true);
    try {
      const task = await call(
        api.POST("/api/v1/tasks", {
          body: parsed.value as TaskCreate,
          params: { header: { "Idempotency-Key": key } },
        }),
      );
      navigate(`/tasks/${task.id}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  return (
    <Page title="New task">
      <form className="panel" onSubmit={(e) => void submit(e)} data-testid="task-form">
        <div className="row tabs" role="tablist">
          <button type="button" role="tab" aria-selected={kind === "steps"} className={kind === "steps" ? "tab active" : "tab"} onClick={() => choose("steps")} data-testid="task-kind-steps">
            Steps
          </button>
          <button type="button" role="tab" aria-selected={kind === "agent"} className={kind === "agent" ? "tab active" : "tab"} onClick={() => choose("agent")} data-testid="task-kind-agent">
            Agent
          </button>
        </div>
        <p className="hint">
          {kind === "steps"
            ? "Declarative Playwright steps: navigate, click, fill, extract, screenshot, … Secrets are referenced as {{ secrets.NAME }}."
            : "A goal in plain language for the LLM agent; options under \"agent\"."}{" "}
          Every field is described in the <a href="/docs#/tasks/create_task_api_v1_tasks_post" target="_blank" rel="noreferrer">API docs</a>.
        </p>
        <JsonEditor
          label="Task (JSON)"
          value={text}
          onChange={(t) => {
            setText(t);
            setKey(randomId());
          }}
          error={error}
          problem={problem}
          rows={20}
          testid="task-json"
        />
        <ErrorNote error={error} fields={[""]} testid="task-error" />
        <div className="row">
          <button type="submit" disabled={busy} data-testid="task-submit">
            {busy ? "Submitting…" : "Submit task"}
          </button>
        </div>
      </form>
    </Page>
  );
}
