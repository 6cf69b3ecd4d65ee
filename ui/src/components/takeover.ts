/** Takeover (docs/liveview.md): a person's mouse and keyboard on the watched image, as the live socket's
 * `INPUT` messages in the page's CSS pixels; the worker replays them with CDP's Input.dispatch*Event. */
import type { KeyboardEvent, MouseEvent, WheelEvent } from "react";

export type InputMessage = { type: "INPUT" } & Record<string, unknown>;

/** CDP's modifier bits: Alt 1, Ctrl 2, Meta 4, Shift 8. */
function modifiers(e: { altKey: boolean; ctrlKey: boolean; metaKey: boolean; shiftKey: boolean }): number {
  return (e.altKey ? 1 : 0) | (e.ctrlKey ? 2 : 0) | (e.metaKey ? 4 : 0) | (e.shiftKey ? 8 : 0);
}

const BUTTONS = ["left", "middle", "right"] as const;
const clamp = (v: number, hi: number) => Math.max(0, Math.min(hi, v));

/** A point on the shown image, in the page's CSS pixels (the frame's `width` × `height`). */
function pagePoint(e: MouseEvent<HTMLElement>, page: { width: number; height: number }): { x: number; y: number } {
  const box = e.currentTarget.getBoundingClientRect();
  const x = ((e.clientX - box.left) * page.width) / Math.max(1, box.width);
  const y = ((e.clientY - box.top) * page.height) / Math.max(1, box.height);
  return { x: Math.round(clamp(x, page.width) * 10) / 10, y: Math.round(clamp(y, page.height) * 10) / 10 };
}

export function mouseInput(e: MouseEvent<HTMLElement>, event: "mousePressed" | "mouseReleased" | "mouseMoved", page: { width: number; height: number }): InputMessage {
  const clicks = event === "mouseMoved" ? 0 : Math.min(3, Math.max(1, e.detail || 1));
  const button = event === "mouseMoved" ? (e.buttons & 1 ? "left" : "none") : (BUTTONS[e.button] ?? "left");
  return { type: "INPUT", kind: "mouse", event, ...pagePoint(e, page), button, click_count: clicks, modifiers: modifiers(e) };
}

export function wheelInput(e: WheelEvent<HTMLElement>, page: { width: number; height: number }): InputMessage {
  const cap = (v: number) => Math.max(-16_000, Math.min(16_000, v));
  return { type: "INPUT", kind: "mouse", event: "mouseWheel", ...pagePoint(e, page), delta_x: cap(e.deltaX), delta_y: cap(e.deltaY), modifiers: modifiers(e) };
}

/** What a key types: a printable character, Enter as a carriage return; nothing under Ctrl/Meta (shortcuts). */
function typed(e: KeyboardEvent): string {
  if (e.ctrlKey || e.metaKey) return "";
  if (e.key === "Enter") return "\r";
  return [...e.key].length === 1 ? e.key : "";
}

export function keyInput(e: KeyboardEvent, event: "keyDown" | "keyUp"): InputMessage {
  const text = event === "keyDown" ? typed(e) : "";
  return { type: "INPUT", kind: "key", event, key: e.key.slice(0, 32), code: e.code.slice(0, 32), text, modifiers: modifiers(e) };
}

export const CONTINUE: InputMessage = { type: "INPUT", kind: "continue" };
