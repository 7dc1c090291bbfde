/**
 * mini_magic's JupyterLab extension: a status-bar item and a runs panel for the active notebook's kernel, and a
 * badge on cells that run remotely. Everything talks to the kernel over the `mini_magic` comm (see protocol.ts);
 * a kernel without mini_magic is left alone.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';

import { CellBadges } from './cellBadges';
import { CurrentRuns } from './currentRuns';
import { KernelRuns } from './kernelRuns';
import { IRun } from './protocol';
import { RunsPanel } from './runsPanel';
import { RunStatusItem } from './statusItem';

const PLUGIN_ID = 'mini-magic:plugin';
const SHOW_RUNS = 'mini-magic:show-runs';

/**
 * One KernelRuns per kernel (by id), shared by every notebook on it. JupyterLab gives comms to one connection per
 * kernel; if the first one met cannot use them and a later one can, the later one takes over.
 */
class KernelRunsRegistry {
  constructor(frontendId: string) {
    this._frontendId = frontendId;
  }

  get(kernel: Kernel.IKernelConnection): KernelRuns {
    const known = this._runs.get(kernel.id);
    if (known !== undefined && !known.isDisposed && (known.ownsComms || !kernel.handleComms)) {
      return known;
    }
    known?.dispose();
    const runs = new KernelRuns(kernel, { frontendId: this._frontendId });
    this._runs.set(kernel.id, runs);
    kernel.disposed.connect(() => {
      runs.dispose();
      if (this._runs.get(kernel.id) === runs) {
        this._runs.delete(kernel.id);
      }
    });
    return runs;
  }

  /** The page is going away: close the comms it opened, so kernels stop sending to them. */
  leave(): void {
    this._runs.forEach(runs => runs.leave());
  }

  private _frontendId: string;
  private _runs = new Map<string, KernelRuns>();
}

/** The same for this browser tab across reloads (sessionStorage), different for every tab. */
function tabId(): string {
  const key = 'mini-magic:frontend-id';
  try {
    let id = window.sessionStorage.getItem(key);
    if (id === null) {
      id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
      window.sessionStorage.setItem(key, id);
    }
    return id;
  } catch {
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }
}

function kernelOf(panel: NotebookPanel | null): Kernel.IKernelConnection | null {
  return panel?.sessionContext.session?.kernel ?? null;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Live status of %%thither runs: status bar, runs panel with Cancel, cell badges.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, notebooks: INotebookTracker, statusBar: IStatusBar | null) => {
    const registry = new KernelRunsRegistry(tabId());
    window.addEventListener('pagehide', () => registry.leave());
    const current = new CurrentRuns();

    const showCurrent = () => {
      const panel = notebooks.currentWidget;
      const kernel = kernelOf(panel);
      current.set(kernel ? registry.get(kernel) : null, panel?.title.label ?? '');
    };

    const follow = (panel: NotebookPanel) => {
      const badges = new CellBadges(panel);
      const bind = () => {
        if (panel.isDisposed) {
          return; // a view closed while its session (shared with other views) lives on
        }
        const kernel = kernelOf(panel);
        badges.setRuns(kernel ? registry.get(kernel) : null);
        if (notebooks.currentWidget === panel) {
          showCurrent();
        }
      };
      panel.sessionContext.kernelChanged.connect(bind);
      void panel.sessionContext.ready.then(bind);
      panel.disposed.connect(() => {
        panel.sessionContext.kernelChanged.disconnect(bind);
        badges.dispose();
      });
      bind();
    };
    notebooks.forEach(follow);
    notebooks.widgetAdded.connect((_, panel) => follow(panel));
    notebooks.currentChanged.connect(showCurrent);

    /** Scroll to the run's cell in a notebook on the active notebook's kernel (the runs panel shows that one). */
    const locate = (run: IRun): boolean => {
      const kernelId = kernelOf(notebooks.currentWidget)?.id;
      let found: { panel: NotebookPanel; index: number } | null = null;
      notebooks.forEach(panel => {
        const index = panel.content.widgets.findIndex(cell => cell.model.id === run.cell_id);
        if (found === null && run.cell_id !== null && kernelOf(panel)?.id === kernelId && index >= 0) {
          found = { panel, index };
        }
      });
      if (found === null) {
        return false;
      }
      const { panel, index } = found as { panel: NotebookPanel; index: number };
      app.shell.activateById(panel.id);
      panel.content.activeCellIndex = index;
      void panel.content.scrollToCell(panel.content.widgets[index], 'center');
      return true;
    };

    const panel = new RunsPanel(current, {
      cancel: runId => current.runs?.cancel(runId) ?? Promise.resolve('not-running'),
      locate
    });
    app.shell.add(panel, 'right', { rank: 700 });

    app.commands.addCommand(SHOW_RUNS, {
      label: 'Show mini_magic runs',
      execute: () => {
        app.shell.activateById(panel.id);
        current.runs?.model.markSeen();
      }
    });

    if (statusBar) {
      const item = new RunStatusItem(current, () => void app.commands.execute(SHOW_RUNS));
      statusBar.registerStatusItem(PLUGIN_ID, {
        item,
        align: 'left',
        rank: 100,
        isActive: () => item.isActiveItem(),
        activeStateChanged: item.activeStateChanged
      });
    }
    showCurrent();
  }
};

export default plugin;
