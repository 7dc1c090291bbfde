/**
 * The runs panel (right side bar): the active notebook kernel's recent runs, a Cancel button per active run, and a
 * click on a run that scrolls to its cell. Built from text nodes only: labels and errors come from user code.
 */

import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { CancelOutcome } from './cancel';
import { CurrentRuns } from './currentRuns';
import { formatElapsed } from './model';
import { IRun, isActive } from './protocol';

const BOLT =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">' +
  '<path class="jp-icon3" fill="#616161" d="M13 2 4 14h7l-1 8 9-12h-7z"/></svg>';

export const boltIcon = new LabIcon({ name: 'mini-magic:bolt', svgstr: BOLT });

const OUTCOME_TEXT: Record<CancelOutcome, string> = {
  acknowledged: 'cancel requested',
  'not-running': 'the run had already ended',
  interrupted: 'no answer over the comm: interrupted the kernel (this run was its running cell)',
  unacknowledged: 'cancel sent; the kernel reads it once its current cell ends'
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
    const runs = this._current.runs;
    const model = runs?.model ?? null;
    if (model === null || !model.connected) {
      this._header.textContent =
        model === null
          ? 'No notebook kernel.'
          : `${this._current.label}: mini_magic is not loaded in this kernel (run %load_ext mini_magic).`;
      this._list.replaceChildren();
      return;
    }
    const all = model.runs;
    const active = all.filter(r => isActive(r.state)).length;
    this._header.textContent = `${this._current.label}: ${active} active, ${all.length} recent`;
    this._list.replaceChildren(...all.map(run => this._row(run)));
  }

  private _row(run: IRun): HTMLElement {
    const model = this._current.runs!.model;
    const row = document.createElement('li');
    row.className = `mm-Run mm-state-${run.state}`;
    row.dataset.runId = run.run_id;
    row.dataset.state = run.state;
    row.title = run.cell_id ? 'Click to scroll to the cell' : 'This run has no recorded cell';
    const cancelling = model.isCancelling(run.run_id);

    const top = append(row, 'div', 'mm-Run-top');
    const count = run.execution_count !== null ? `[${run.execution_count}] ` : '';
    append(top, 'span', 'mm-Run-label').textContent = count + (run.label ?? run.run_id);
    append(top, 'span', 'mm-Run-state').textContent = cancelling ? 'cancelling…' : run.state;

    const meta = append(row, 'div', 'mm-Run-meta');
    const where = [run.backend, run.profile.gpu || 'no GPU', run.background ? 'background' : ''].filter(Boolean);
    append(meta, 'span', 'mm-Run-where').textContent = where.join(' · ');
    append(meta, 'span', 'mm-Run-elapsed').textContent = formatElapsed(model.elapsed(run));
    if (run.progress !== null) {
      const p = run.progress;
      const of = p.total !== null ? `/${p.total}` : '';
      append(meta, 'span', 'mm-Run-progress').textContent = `${p.desc ? p.desc + ' ' : ''}${p.n}${of}`;
    }
    if (run.error) {
      const error = append(row, 'div', 'mm-Run-error');
      error.textContent = run.error.length > 160 ? run.error.slice(0, 157) + '…' : run.error;
      error.title = run.error;
    }
    if (isActive(run.state)) {
      const button = append(row, 'button', 'mm-Run-cancel jp-mod-styled jp-mod-warn') as HTMLButtonElement;
      button.textContent = 'Cancel';
      button.disabled = cancelling;
      button.addEventListener('click', event => {
        event.stopPropagation();
        void this._cancel(run);
      });
    }
    row.addEventListener('click', () => {
      if (!this._actions.locate(run)) {
        this._note.textContent = 'That cell is not in an open notebook on this kernel.';
      }
    });
    return row;
  }

  private async _cancel(run: IRun): Promise<void> {
    this._note.textContent = `cancelling ${run.label ?? run.run_id}…`;
    try {
      this._note.textContent = OUTCOME_TEXT[await this._actions.cancel(run.run_id)];
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
}

function append(parent: HTMLElement, tag: string, className: string): HTMLElement {
  const element = document.createElement(tag);
  element.className = className;
  parent.appendChild(element);
  return element;
}
