/**
 * A small badge on each cell whose run is active ("⚡ running · L4"), via data attributes the stylesheet draws:
 * no DOM of our own inside JupyterLab's cells, so nothing to clean up when cells are re-rendered or windowed.
 */

import type { NotebookPanel } from '@jupyterlab/notebook';

import { KernelRuns } from './kernelRuns';
import { isActive } from './protocol';

export class CellBadges {
  constructor(panel: NotebookPanel) {
    this._panel = panel;
    panel.content.model?.cells.changed.connect(this._render, this);
  }

  setRuns(runs: KernelRuns | null): void {
    if (runs === this._runs) {
      return;
    }
    this._runs?.model.changed.disconnect(this._render, this);
    this._runs = runs;
    runs?.model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    this.setRuns(null);
    this._panel.content.model?.cells.changed.disconnect(this._render, this);
  }

  private _render(): void {
    const byCell = new Map<string, string>();
    for (const run of this._runs?.model.runs ?? []) {
      if (run.cell_id !== null && isActive(run.state) && !byCell.has(run.cell_id)) {
        byCell.set(run.cell_id, `⚡ ${run.state} · ${run.profile.gpu || run.backend}`);
      }
    }
    for (const cell of this._panel.content.widgets) {
      const badge = byCell.get(cell.model.id);
      const node = cell.node;
      if (badge === undefined) {
        if (node.dataset.miniMagic !== undefined) {
          delete node.dataset.miniMagic;
          node.classList.remove('mm-mod-remote');
        }
      } else if (node.dataset.miniMagic !== badge) {
        node.dataset.miniMagic = badge;
        node.classList.add('mm-mod-remote');
      }
    }
  }

  private _panel: NotebookPanel;
  private _runs: KernelRuns | null = null;
}
