/**
 * Which kernel's runs the status bar and the runs panel show: the active notebook's.
 *
 * Re-emits the current model's changes, so views subscribe once and never rebind, and ticks once a second while
 * that kernel has a running run (elapsed times move with no kernel traffic; no timer runs when nothing does).
 */

import { ISignal, Signal } from '@lumino/signaling';

import { KernelRuns } from './kernelRuns';

export class CurrentRuns {
  constructor(tickMs = 1000) {
    this._tickMs = tickMs;
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get runs(): KernelRuns | null {
    return this._runs;
  }

  /** What the views call this kernel (the notebook's name). */
  get label(): string {
    return this._label;
  }

  set(runs: KernelRuns | null, label: string): void {
    if (runs === this._runs && label === this._label) {
      return;
    }
    this._runs?.model.changed.disconnect(this._onModelChanged, this);
    this._runs = runs;
    this._label = label;
    runs?.model.changed.connect(this._onModelChanged, this);
    this._onModelChanged();
  }

  dispose(): void {
    this.set(null, '');
    Signal.clearData(this);
  }

  private _onModelChanged(): void {
    this._changed.emit(undefined);
    const running = this._runs?.model.activeRuns.some(r => r.state === 'running') ?? false;
    if (running && this._timer === null) {
      this._timer = setInterval(() => {
        if (!this._runs?.model.tick()) {
          this._stopTicking();
        }
      }, this._tickMs);
    } else if (!running) {
      this._stopTicking();
    }
  }

  private _stopTicking(): void {
    if (this._timer !== null) {
      clearInterval(this._timer);
      this._timer = null;
    }
  }

  private _runs: KernelRuns | null = null;
  private _label = '';
  private _tickMs: number;
  private _timer: ReturnType<typeof setInterval> | null = null;
  private _changed = new Signal<this, void>(this);
}
