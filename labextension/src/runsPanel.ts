/**
 * The runs panel (right side bar): the active notebook kernel's recent runs, a Cancel button per active run, and a
 * click on a run that scrolls to its cell. Built from text nodes only: labels and errors come from user code.
 */

import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { CancelOutcome } from './cancel';
import { CurrentRuns } from './currentRuns';
import { Connection, formatElapsed } from './model';
import { IRun, isActive } from './protocol';

const BOLT =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
  '<path class="jp-icon3" fill="#616161" d="M13 2 4 14h7l-1 8 9-12h-7z"/></svg>';

export const boltIcon = new LabIcon({ name: 'mini-magic:bolt', svgstr: BOLT });

const OUTCOME_TEXT: Record<CancelOutcome, string> = {
  acknowledged: 'cancel requested',
  'not-running': 'the run had already ended',
  interrupted: 'no answer over the comm: interrupted the kernel (this run was its running cell)',
  unacknowledged: 'cancel sent; the kernel reads it once its current cell ends',
  'not-sent': 'not connected to the kernel: nothing was sent'
};

const CONNECTION_TEXT: Record<Exclude<Connection, 'connected'>, string> = {
  connecting: 'connecting to the kernel…',
  absent: 'mini_magic is not loaded in this kernel (run %load_ext mini_magic).',
  'no-comms': 'another view of this kernel owns its comms: open the runs from that notebook.'
};

export interface IRunsPanelActions {
  cancel(runId: string): Promise<CancelOutcome>;
  /** Scroll to the run's cell; false when no open notebook on this kernel has it. */
  locate(run: IRun): boolean;
}

export class RunsPanel extends Widget {
  constructor(current: CurrentRuns, actions: IRunsPanelActions) {
    super();
    this._current = current;
    this._actions = actions;
    this.id = 'mini-magic-runs';
    this.addClass('mm-RunsPanel');
    this.title.icon = boltIcon;
    this.title.caption = 'mini_magic runs';
    this._header = append(this.node, 'div', 'mm-RunsPanel-header');
    this._note = append(this.node, 'div', 'mm-RunsPanel-note');
    this._list = append(this.node, 'ul', 'mm-RunsPanel-list');
    current.changed.connect(this._onChanged, this);
    this._render();
  }

  dispose(): void {
    this._current.changed.disconnect(this._onChanged, this);
    super.dispose();
  }

  protected onAfterShow(): void {
    this._current.runs?.model.markSeen();
    this._render();
  }

  private _onChanged(): void {
    if (this.isVisible) {
      this._current.runs?.model.markSeen();
      this._render();
    }
  }

  private _render(): void {
    const model = this._current.runs?.model ?? null;
    if (model === null || model.connection !== 'connected') {
      this._header.textContent =
        model === null ? 'No notebook kernel.' : `${this._current.label}: ${CONNECTION_TEXT[model.connection as Exclude<Connection, 'connected'>]}`;
      this._rows.clear();
      this._list.replaceChildren();
      return;
    }
    const all = model.runs;
    const active = all.filter(r => isActive(r.state)).length;
    this._header.textContent = `${this._current.label}: ${active} active, ${all.length} recent`;
    // Rows are updated in place, never rebuilt: the list re-renders every second while a run ticks, and a Cancel
    // button replaced between mousedown and mouseup would swallow the click.
    const listed = new Set(all.map(r => r.run_id));
    for (const [id, row] of this._rows) {
      if (!listed.has(id)) {
        row.node.remove();
        this._rows.delete(id);
      }
    }
    all.forEach((run, index) => {
      let row = this._rows.get(run.run_id);
      if (row === undefined) {
        const runId = run.run_id;
        row = new RunRow(runId, () => void this._cancel(runId), () => this._locate(runId));
        this._rows.set(runId, row);
      }
      row.update(run, model.elapsed(run), model.isCancelling(run.run_id));
      if (this._list.children[index] !== row.node) {
        this._list.insertBefore(row.node, this._list.children[index] ?? null);
      }
    });
  }

  private _locate(runId: string): void {
    const run = this._current.runs?.model.get(runId);
    if (run !== undefined && !this._actions.locate(run)) {
      this._note.textContent = 'That cell is not in an open notebook on this kernel.';
    }
  }

  private async _cancel(runId: string): Promise<void> {
    const run = this._current.runs?.model.get(runId);
    this._note.textContent = `cancelling ${run?.label ?? runId}…`;
    try {
      this._note.textContent = OUTCOME_TEXT[await this._actions.cancel(runId)];
    } catch (error) {
      this._note.textContent = `cancel failed: ${String(error)}`;
    }
    this._render();
  }

  private _current: CurrentRuns;
  private _actions: IRunsPanelActions;
  private _header: HTMLElement;
  private _note: HTMLElement;
  private _list: HTMLElement;
  private _rows = new Map<string, RunRow>();
}

/** One run's entry in the list; its elements live as long as the run is listed. */
class RunRow {
  readonly node: HTMLElement;

  constructor(runId: string, onCancel: () => void, onLocate: () => void) {
    this.node = document.createElement('li');
    this.node.dataset.runId = runId;
    const top = append(this.node, 'div', 'mm-Run-top');
    this._label = append(top, 'span', 'mm-Run-label');
    this._state = append(top, 'span', 'mm-Run-state');
    const meta = append(this.node, 'div', 'mm-Run-meta');
    this._where = append(meta, 'span', 'mm-Run-where');
    this._elapsed = append(meta, 'span', 'mm-Run-elapsed');
    this._progress = append(meta, 'span', 'mm-Run-progress');
    this._error = append(this.node, 'div', 'mm-Run-error');
    this._cancel = append(this.node, 'button', 'mm-Run-cancel jp-mod-styled jp-mod-warn') as HTMLButtonElement;
    this._cancel.textContent = 'Cancel';
    this._cancel.addEventListener('click', event => {
      event.stopPropagation();
      onCancel();
    });
    this.node.addEventListener('click', onLocate);
  }

  update(run: IRun, elapsed: number | null, cancelling: boolean): void {
    const p = run.progress;
    const error = run.error ?? '';
    const count = run.execution_count !== null ? `[${run.execution_count}] ` : '';
    const where = [run.backend, run.profile.gpu || 'no GPU', run.background ? 'background' : ''];
    set(this.node, 'className', `mm-Run mm-state-${run.state}`);
    set(this.node, 'title', run.cell_id ? 'Click to scroll to the cell' : 'This run has no recorded cell');
    this.node.dataset.state = run.state;
    set(this._label, 'textContent', count + (run.label ?? run.run_id));
    set(this._state, 'textContent', cancelling ? 'cancelling…' : run.state);
    set(this._where, 'textContent', where.filter(Boolean).join(' · '));
    set(this._elapsed, 'textContent', formatElapsed(elapsed));
    set(this._progress, 'textContent', p ? `${p.desc ? p.desc + ' ' : ''}${p.n}${p.total !== null ? '/' + p.total : ''}` : '');
    set(this._error, 'textContent', error.length > 160 ? error.slice(0, 157) + '…' : error);
    set(this._error, 'title', error);
    this._error.hidden = error === '';
    this._cancel.hidden = !isActive(run.state);
    this._cancel.disabled = cancelling;
  }

  private _label: HTMLElement;
  private _state: HTMLElement;
  private _where: HTMLElement;
  private _elapsed: HTMLElement;
  private _progress: HTMLElement;
  private _error: HTMLElement;
  private _cancel: HTMLButtonElement;
}

/** Touch the DOM only when a value changes (no needless style recalculation on every tick). */
function set(element: HTMLElement, key: 'className' | 'title' | 'textContent', value: string): void {
  if (element[key] !== value) {
    element[key] = value;
  }
}

function append(parent: HTMLElement, tag: string, className: string): HTMLElement {
  const element = document.createElement(tag);
  element.className = className;
  parent.appendChild(element);
  return element;
}
