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

/** One KernelRuns per kernel connection, shared by every view of a notebook, gone with the connection. */
class KernelRunsRegistry {
  get(kernel: Kernel.IKernelConnection): KernelRuns {
    let runs = this._runs.get(kernel);
    if (runs === undefined) {
      runs = new KernelRuns(kernel);
      this._runs.set(kernel, runs);
      kernel.disposed.connect(() => {
        this._runs.get(kernel)?.dispose();
        this._runs.delete(kernel);
      });
    }
    return runs;
  }

  private _runs = new Map<Kernel.IKernelConnection, KernelRuns>();
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
    const registry = new KernelRunsRegistry();
    const current = new CurrentRuns();

    const showCurrent = () => {
      const panel = notebooks.currentWidget;
      const kernel = kernelOf(panel);
      current.set(kernel ? registry.get(kernel) : null, panel?.title.label ?? '');
    };

    const follow = (panel: NotebookPanel) => {
      const badges = new CellBadges(panel);
      const bind = () => {
        const kernel = kernelOf(panel);
        badges.setRuns(kernel ? registry.get(kernel) : null);
        if (notebooks.currentWidget === panel) {
          showCurrent();
        }
      };
      panel.sessionContext.kernelChanged.connect(bind);
      void panel.sessionContext.ready.then(bind);
      panel.disposed.connect(() => badges.dispose());
      bind();
    };
    notebooks.forEach(follow);
    notebooks.widgetAdded.connect((_, panel) => follow(panel));
    notebooks.currentChanged.connect(showCurrent);

    /** Scroll to the run's cell in a notebook on the active notebook's kernel (the runs panel shows that one). */
    const locate = (run: IRun): boolean => {
      const kernel = kernelOf(notebooks.currentWidget);
      let found: { panel: NotebookPanel; index: number } | null = null;
      notebooks.forEach(panel => {
        const index = panel.content.widgets.findIndex(cell => cell.model.id === run.cell_id);
        if (found === null && run.cell_id !== null && kernelOf(panel) === kernel && index >= 0) {
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
