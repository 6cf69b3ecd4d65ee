import { Component, type ErrorInfo, type ReactNode } from "react";

interface Props {
  children: ReactNode;
  /** what to call the area in the message, e.g. "this page" */
  where?: string;
}

/** Never a blank page: a render error shows what happened and a way out, and leaves the rest of the app up. */
export class ErrorBoundary extends Component<Props, { error: Error | null }> {
  override state = { error: null as Error | null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  override componentDidCatch(error: Error, info: ErrorInfo): void {
    console.error("dashboard error", error, info.componentStack);
  }

  override render() {
    const { error } = this.state;
    if (!error) return this.props.children;
    return (
      <div className="panel error-panel" role="alert" data-testid="error-boundary">
        <h2>Something went wrong on {this.props.where ?? "this page"}</h2>
        <p>The dashboard hit an error it did not expect. Your data is safe; the error is below.</p>
        <pre className="mono small">{error.message}</pre>
        <div className="row">
          <button type="button" onClick={() => this.setState({ error: null })}>
            Try again
          </button>
          <button type="button" className="secondary" onClick={() => window.location.assign("/app/tasks")}>
            Go to tasks
          </button>
        </div>
      </div>
    );
  }
}
