import { useCallback, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { orgEvents, type OrgEvent, type StreamState } from "../api/events";

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (update: (old: T | undefined) => T | undefined) => void;
}

/** Loads `load()` now, again whenever `deps` change, and every `pollMs` while the tab is visible. An answer
 * that arrives after a newer request started is dropped, so a slow poll never overwrites fresher data. */
export function useApi<T>(load: () => Promise<T>, deps: readonly unknown[], pollMs: number | null = null): Loaded<T> {
  const [data, setDataState] = useState<T | undefined>(undefined);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const seq = useRef(0);
  const loadRef = useRef(load);
  loadRef.current = load;

  const run = useCallback(() => {
    const mine = ++seq.current;
    loadRef
      .current()
      .then((d) => {
        if (mine !== seq.current) return;
        setDataState(d);
        setError(null);
      })
      .catch((e: unknown) => {
        if (mine === seq.current) setError(e);
      })
      .finally(() => {
        if (mine === seq.current) setLoading(false);
      });
  }, []);

  useEffect(() => {
    setLoading(true);
    run();
  }, deps);

  useEffect(() => {
    if (!pollMs) return;
    const id = setInterval(() => {
      if (document.visibilityState === "visible") run();
    }, pollMs);
    return () => clearInterval(id);
  }, [pollMs, run]);

  const setData = useCallback((update: (old: T | undefined) => T | undefined) => setDataState(update), []);
  return { data, error, loading, reload: run, setData };
}

/** A button's action: `busy` while it runs, `error` when it failed, the result on success. */
export function useAction<A extends unknown[], R>(fn: (...args: A) => Promise<R>) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const run = useCallback(async (...args: A): Promise<R | undefined> => {
    setBusy(true);
    setError(null);
    try {
      return await fnRef.current(...args);
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { run, busy, error, setError };
}

export function useStreamState(): StreamState {
  return useSyncExternalStore(
    (cb) => orgEvents.onState(cb),
    () => orgEvents.state,
  );
}

/** Calls `handler` for every org event while mounted (the latest handler, without resubscribing). */
export function useOrgEvents(handler: (e: OrgEvent) => void): void {
  const ref = useRef(handler);
  ref.current = handler;
  useEffect(() => orgEvents.onEvent((e) => ref.current(e)), []);
}

/** Poll fast while the event stream is down, slowly (a safety net) while it is live. */
export function usePollInterval(fastMs: number, slowMs: number): number {
  return useStreamState() === "live" ? slowMs : fastMs;
}

/** A list from the API (`useApi` with no dependencies unless given). */
export function useResource<T>(load: () => Promise<T[]>, deps: readonly unknown[] = [], pollMs: number | null = null) {
  const list = useApi(load, deps, pollMs);
  /** put an updated item (the API's answer) in place of the one with its id */
  const replace = useCallback((item: T & { id: string }) => list.setData((old) => old?.map((x) => ((x as { id: string }).id === item.id ? item : x))), [list.setData]);
  return { ...list, replace };
}

/** A change to a listed thing (delete, revoke, pause…): an action that reloads the list when it succeeded. */
export function useChange<A extends unknown[]>(list: { reload: () => void }, fn: (...args: A) => Promise<unknown>) {
  return useAction(async (...args: A) => {
    await fn(...args);
    list.reload();
  });
}
