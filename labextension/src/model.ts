/**
 * The runs of one kernel as the frontend knows them: the single owner of that state.
 *
 * Views never keep their own copies; they read the model when `changed` fires (on kernel messages and on the
 * one-second tick while runs are active, so elapsed times move without any kernel traffic).
 */

import { ISignal, Signal } from '@lumino/signaling';

import { IRun, KernelMessage, isActive } from './protocol';

/** How far a state has progressed; a run never moves back (events from different kernel threads may cross). */
function stage(run: IRun): number {
  return run.state === 'queued' ? 0 : run.state === 'running' ? 1 : 2;
}

interface IEntry {
  run: IRun;
  /** Local clock (ms) when `run.elapsed` was received: running runs tick from there. */
  receivedAt: number;
}

/**
 * Where the conversation with the kernel stands:
 * - `connecting`: a comm was opened and the kernel has not answered yet;
 * - `connected`: the kernel answered; the runs are live;
 * - `absent`: the kernel has not loaded mini_magic (it closed the comm), or it restarted, or the comm was lost;
 * - `no-comms`: this kernel connection cannot use comms (JupyterLab gives them to one connection per kernel).
 */
export type Connection = 'connecting' | 'connected' | 'absent' | 'no-comms';

export interface IRunsSummary {
  running: number;
  queued: number;
  /** What the active runs run on: their GPUs, or their backends when they have none ("L4", "local"). */
  hardware: string;
  /** Seconds the longest-running active run has been running. */
  elapsed: number;
  /** Failed runs that finished while this frontend watched and that nobody has looked at yet. */
  unseenFailures: number;
}

export class RunsModel {
  constructor(now: () => number = Date.now) {
    this._now = now;
  }

  /** Emitted after any change, including the tick of running runs' elapsed time. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get connection(): Connection {
    return this._connection;
  }

  /** Whether the runs are live (the kernel answered the comm). */
  get connected(): boolean {
    return this._connection === 'connected';
  }

  get kernelId(): string | null {
    return this._kernelId;
  }

  /** Every known run, newest first. */
  get runs(): IRun[] {
    return [...this._entries.values()].map(e => e.run).sort((a, b) => b.created_at - a.created_at);
  }

  get activeRuns(): IRun[] {
    return this.runs.filter(r => isActive(r.state));
  }

  get(runId: string): IRun | undefined {
    return this._entries.get(runId)?.run;
  }

  isUnseenFailure(runId: string): boolean {
    return this._unseen.has(runId);
  }

  isCancelling(runId: string): boolean {
    return this._cancelling.has(runId);
  }

  /** Seconds this run has been running, ticking locally between kernel events. */
  elapsed(run: IRun): number | null {
    const entry = this._entries.get(run.run_id);
    if (entry === undefined || entry.run.elapsed === null) {
      return run.elapsed;
    }
    if (entry.run.state !== 'running') {
      return entry.run.elapsed;
    }
    return entry.run.elapsed + Math.max(0, this._now() - entry.receivedAt) / 1000;
  }

  /** The status-bar summary, or null when there is nothing to show. */
  summary(): IRunsSummary | null {
    const active = this.activeRuns;
    if (active.length === 0 && this._unseen.size === 0) {
      return null;
    }
    const oldestFirst = [...active].reverse();
    const hardware = [...new Set(oldestFirst.map(r => r.profile.gpu || r.backend))];
    return {
      running: active.filter(r => r.state === 'running').length,
      queued: active.filter(r => r.state === 'queued').length,
      hardware: hardware.join(', '),
      elapsed: Math.max(0, ...active.map(r => this.elapsed(r) ?? 0)),
      unseenFailures: this._unseen.size
    };
  }

  /** Apply one message from the kernel (cancel acknowledgements are for the cancel logic, not the model). */
  apply(message: KernelMessage): void {
    if (message.type === 'snapshot') {
      this._kernelId = message.kernel_id;
      this._connection = 'connected';
      // The snapshot says which runs exist; a run event that overtook it may know a later state of one of them.
      const now = this._now();
      const entries = new Map<string, IEntry>();
      for (const run of message.runs) {
        const known = this._entries.get(run.run_id);
        entries.set(run.run_id, known !== undefined && stage(known.run) > stage(run) ? known : { run, receivedAt: now });
      }
      this._entries = entries;
      for (const id of [...this._unseen]) {
        if (this._entries.get(id)?.run.state !== 'failed') {
          this._unseen.delete(id);
        }
      }
      this._forgetFinishedCancels();
      this._emit();
    } else if (message.type === 'run') {
      const wasConnected = this.connected;
      this._connection = 'connected';
      if (this._upsert(message.run) || !wasConnected) {
        this._emit();
      }
    }
  }

  /**
   * Anything but `connected` forgets the runs: without the comm nothing would tell us when they end, and a status
   * bar ticking forever for a run that is long gone is worse than none.
   */
  setConnection(connection: Connection): void {
    if (connection === this._connection) {
      return;
    }
    this._connection = connection;
    if (connection !== 'connected') {
      this._entries.clear();
      this._unseen.clear();
      this._cancelling.clear();
      this._kernelId = null;
    }
    this._emit();
  }

  /** The user looked at the runs (opened the panel): failures stop asking for attention. */
  markSeen(): void {
    if (this._unseen.size > 0) {
      this._unseen.clear();
      this._emit();
    }
  }

  setCancelling(runId: string, cancelling: boolean): void {
    const had = this._cancelling.has(runId);
    if (cancelling && !had && this._entries.has(runId) && isActive(this._entries.get(runId)!.run.state)) {
      this._cancelling.add(runId);
      this._emit();
    } else if (!cancelling && had) {
      this._cancelling.delete(runId);
      this._emit();
    }
  }

  /** Re-render views of ticking elapsed times; returns whether anything is running (whether to keep ticking). */
  tick(): boolean {
    const running = this.activeRuns.some(r => r.state === 'running');
    if (running) {
      this._emit();
    }
    return running;
  }

  private _upsert(run: IRun): boolean {
    const known = this._entries.get(run.run_id);
    if (known !== undefined && stage(run) < stage(known.run)) {
      return false;
    }
    if (run.state === 'failed' && known?.run.state !== 'failed') {
      this._unseen.add(run.run_id);
    }
    this._entries.set(run.run_id, { run, receivedAt: this._now() });
    this._forgetFinishedCancels();
    return true;
  }

  private _forgetFinishedCancels(): void {
    for (const id of [...this._cancelling]) {
      const entry = this._entries.get(id);
      if (entry === undefined || !isActive(entry.run.state)) {
        this._cancelling.delete(id);
      }
    }
  }

  private _emit(): void {
    this._changed.emit(undefined);
  }

  private _now: () => number;
  private _entries = new Map<string, IEntry>();
  private _unseen = new Set<string>();
  private _cancelling = new Set<string>();
  private _kernelId: string | null = null;
  private _connection: Connection = 'absent';
  private _changed = new Signal<this, void>(this);
}

/** "01:23", or "1:02:03" past an hour. */
export function formatElapsed(seconds: number | null): string {
  if (seconds === null) {
    return '–';
  }
  const total = Math.floor(Math.max(0, seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

/** The status-bar text: "⚡ 2 running · L4 · 01:23", "⚡ 1 queued · local", "⚠ 1 failed". */
export function statusText(summary: IRunsSummary): string {
  const parts: string[] = [];
  if (summary.running + summary.queued > 0) {
    const counts = [
      summary.running > 0 ? `${summary.running} running` : '',
      summary.queued > 0 ? `${summary.queued} queued` : ''
    ].filter(Boolean);
    parts.push(`⚡ ${counts.join(', ')}`, summary.hardware);
    if (summary.running > 0) {
      parts.push(formatElapsed(summary.elapsed));
    }
  }
  if (summary.unseenFailures > 0) {
    parts.push(`⚠ ${summary.unseenFailures} failed`);
  }
  return parts.join(' · ');
}
