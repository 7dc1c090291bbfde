/** The status-bar item: "⚡ 2 running · L4 · 01:23" for the active notebook's kernel; hidden when there is nothing. */

import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { CurrentRuns } from './currentRuns';
import { statusText } from './model';

export class RunStatusItem extends Widget {
  constructor(current: CurrentRuns, onClick: () => void) {
    super();
    this._current = current;
    this.addClass('mm-StatusItem');
    this.addClass('jp-StatusBar-TextItem');
    this.node.title = 'mini_magic runs: click to open the runs panel';
    this.node.setAttribute('role', 'button');
    this.node.addEventListener('click', onClick);
    current.changed.connect(this._render, this);
    this._render();
  }

  /** For the status bar: shown only while something runs or a failure is unseen. */
  get activeStateChanged(): ISignal<this, void> {
    return this._activeStateChanged;
  }

  isActiveItem(): boolean {
    return this._active;
  }

  dispose(): void {
    this._current.changed.disconnect(this._render, this);
    super.dispose();
  }

  private _render(): void {
    const summary = this._current.runs?.model.summary() ?? null;
    this.node.textContent = summary === null ? '' : statusText(summary);
    this.toggleClass('mm-mod-failed', (summary?.unseenFailures ?? 0) > 0);
    const active = summary !== null;
    if (active !== this._active) {
      this._active = active;
      this._activeStateChanged.emit(undefined);
    }
  }

  private _current: CurrentRuns;
  private _active = false;
  private _activeStateChanged = new Signal<this, void>(this);
}
