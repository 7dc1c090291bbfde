/**
 * One kernel's side of the `mini_magic` comm: opens it, follows restarts, feeds the model, carries Cancel.
 *
 * Two ways in, because either side may come first:
 * - the frontend opens a comm when it meets the kernel (page load or reload, kernel switched, restart finished):
 *   a kernel that has loaded mini_magic answers with a snapshot; one that has not closes the comm at once, quietly;
 * - the kernel opens a comm itself at `%load_ext mini_magic`, which this class accepts as its comm target.
 */

import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { ISignal } from '@lumino/signaling';

import { CancelOutcome, CancelRequests } from './cancel';
import { RunsModel } from './model';
import { COMM_TARGET, FrontendMessage, parseKernelMessage } from './protocol';

/** The part of a JupyterLab kernel connection this class uses (so tests can drive it with a fake kernel). */
export interface IKernelLike {
  readonly status: Kernel.Status;
  readonly statusChanged: ISignal<any, Kernel.Status>;
  readonly iopubMessage: ISignal<any, KernelMessage.IIOPubMessage>;
  readonly handleComms: boolean;
  readonly isDisposed: boolean;
  createComm(targetName: string, commId?: string): Kernel.IComm;
  registerCommTarget(
    targetName: string,
    callback: (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) => void | PromiseLike<void>
  ): void;
  removeCommTarget(
    targetName: string,
    callback: (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) => void | PromiseLike<void>
  ): void;
  interrupt(): Promise<void>;
}

const GONE: ReadonlySet<Kernel.Status> = new Set<Kernel.Status>(['restarting', 'autorestarting', 'dead']);

export interface IKernelRunsOptions {
  ackTimeoutMs?: number;
  now?: () => number;
}

export class KernelRuns {
  readonly model: RunsModel;

  constructor(kernel: IKernelLike, options: IKernelRunsOptions = {}) {
    this._kernel = kernel;
    this.model = new RunsModel(options.now);
    this._cancels = new CancelRequests(
      {
        send: message => this._send(message),
        interrupt: () => this._kernel.interrupt(),
        foregroundMsgId: () => this._foreground
      },
      { ackTimeoutMs: options.ackTimeoutMs }
    );
    if (!kernel.handleComms) {
      return; // a second connection to a kernel (e.g. a console) cannot own comms; the notebook's does
    }
    kernel.registerCommTarget(COMM_TARGET, this._onKernelOpened);
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.iopubMessage.connect(this._onIopub, this);
    this.connect();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Ask the kernel for its runs; quiet if it has not loaded mini_magic. */
  connect(): void {
    if (this._disposed || this._comm !== null || GONE.has(this._kernel.status) || this._kernel.isDisposed) {
      return;
    }
    let comm: Kernel.IComm;
    try {
      comm = this._kernel.createComm(COMM_TARGET);
    } catch (error) {
      console.debug('mini_magic: cannot open a comm on this kernel', error);
      return;
    }
    this._adopt(comm);
    comm.open({}).done.catch(() => this._drop(comm));
  }

  /** Cancel a run (see CancelRequests for when the kernel gets interrupted instead). */
  async cancel(runId: string): Promise<CancelOutcome> {
    const run = this.model.get(runId);
    if (run === undefined) {
      return 'not-running';
    }
    this.model.setCancelling(runId, true);
    const outcome = await this._cancels.cancel(run);
    if (outcome === 'not-running') {
      this.model.setCancelling(runId, false);
    }
    return outcome;
  }

  /** Whether a kernel interrupt would stop this run (it is the cell the kernel is executing in the foreground). */
  isForeground(runId: string): boolean {
    const run = this.model.get(runId);
    return run !== undefined && this._cancels.isForeground(run);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (!this._kernel.isDisposed && this._kernel.handleComms) {
      this._kernel.removeCommTarget(COMM_TARGET, this._onKernelOpened);
    }
    this._kernel.statusChanged.disconnect(this._onStatus, this);
    this._kernel.iopubMessage.disconnect(this._onIopub, this);
    const comm = this._comm;
    this._comm = null;
    if (comm !== null && !comm.isDisposed) {
      try {
        comm.close();
      } catch {
        // the kernel is gone already
      }
    }
  }

  private _onKernelOpened = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    if (this._disposed) {
      return;
    }
    this._adopt(comm);
    this._handle(msg.content.data);
  };

  private _adopt(comm: Kernel.IComm): void {
    const previous = this._comm;
    this._comm = comm;
    comm.onMsg = msg => this._handle(msg.content.data);
    comm.onClose = () => this._drop(comm);
    if (previous !== null && previous !== comm && !previous.isDisposed) {
      previous.onClose = () => undefined;
      try {
        previous.close();
      } catch {
        // already closed by the kernel
      }
    }
  }

  private _drop(comm: Kernel.IComm): void {
    if (this._comm === comm) {
      this._comm = null;
      this.model.setConnected(false);
    }
  }

  private _handle(data: unknown): void {
    const message = parseKernelMessage(data);
    if (message === null) {
      return;
    }
    if (message.type === 'cancel_ack') {
      this._cancels.handleAck(message);
    } else {
      this.model.apply(message);
    }
  }

  private _send(message: FrontendMessage): boolean {
    const comm = this._comm;
    if (comm === null || comm.isDisposed) {
      return false;
    }
    try {
      comm.send(message as any);
      return true;
    } catch (error) {
      console.debug('mini_magic: sending on the comm failed', error);
      this._drop(comm);
      return false;
    }
  }

  private _onStatus(_: unknown, status: Kernel.Status): void {
    if (GONE.has(status)) {
      // A restart disposes the kernel's comms without closing them, and the runs died with the process.
      this._comm = null;
      this._foreground = null;
      this._restarted = true;
      this.model.reset();
    } else if (status === 'idle' && this._restarted) {
      // The new process may load mini_magic at startup (ipython_config's extensions): ask once.
      this._restarted = false;
      this.connect();
    }
  }

  /** Track which execute_request the main shell is busy with, from the kernel's own status messages. */
  private _onIopub(_: unknown, msg: KernelMessage.IIOPubMessage): void {
    if (msg.header.msg_type !== 'status') {
      return;
    }
    const parent = msg.parent_header as Partial<KernelMessage.IHeader> & { subshell_id?: string | null };
    if (parent?.msg_type !== 'execute_request' || (parent.subshell_id ?? null) !== null) {
      return;
    }
    const state = (msg.content as KernelMessage.IStatusMsg['content']).execution_state;
    if (state === 'busy') {
      this._foreground = parent.msg_id ?? null;
    } else if (state === 'idle' && this._foreground === parent.msg_id) {
      this._foreground = null;
    }
  }

  private _kernel: IKernelLike;
  private _cancels: CancelRequests;
  private _comm: Kernel.IComm | null = null;
  private _foreground: string | null = null;
  private _restarted = false;
  private _disposed = false;
}
