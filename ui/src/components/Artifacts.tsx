import { useState } from "react";
import { api, call, downloadFile } from "../api/client";
import type { Artifact } from "../api/types";
import { fmtBytes } from "../lib/format";
import { useApi } from "../lib/hooks";
import { AuthImage, Empty, ErrorNote, Loading } from "./ui";

const isImage = (a: Artifact) => a.content_type.startsWith("image/");

/** A task's artifacts: screenshots inline (fetched with the token, shown from a blob URL), every file as a download. */
export function ArtifactsPanel({ taskId, version }: { taskId: string; version: string }) {
  const list = useApi(() => call(api.GET("/api/v1/tasks/{task_id}/artifacts", { params: { path: { task_id: taskId } } })), [taskId, version]);
  const [error, setError] = useState<unknown>(null);
  if (list.loading && !list.data) return <Loading what="Loading artifacts" />;
  if (list.error) return <ErrorNote error={list.error} />;
  const items = list.data ?? [];
  if (!items.length) return <Empty>No artifacts.</Empty>;
  return (
    <div data-testid="artifacts">
      <ErrorNote error={error} />
      <ul className="artifacts">
        {items.map((a) => (
          <li key={`${a.attempt ?? 0}/${a.name}`} data-testid="artifact-row" data-name={a.name}>
            <div className="row spread">
              <span>
                <strong>{a.name}</strong> <span className="muted small">{a.content_type} · {fmtBytes(a.size)}{a.attempt ? ` · attempt ${a.attempt}` : ""}</span>
              </span>
              <button
                type="button"
                className="secondary"
                onClick={() => {
                  setError(null);
                  downloadFile(a.url, a.name).catch(setError);
                }}
                data-testid="artifact-download"
              >
                Download
              </button>
            </div>
            {isImage(a) && <AuthImage src={a.url} alt={a.name} testid="artifact-image" className="shot" />}
          </li>
        ))}
      </ul>
    </div>
  );
}
