/**
 * One kernel's side of the `mini_magic` comm: opens it, follows restarts and reconnects, feeds the model, carries
 * Cancel, and decides when a kernel interrupt is a safe fallback for it.
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
import { COMM_TARGET, FrontendMessage, IRun, isActive, parseKernelMessage } from './protocol';

type CommTarget = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) => void | PromiseLike<void>;

/** The part of a JupyterLab kernel connection this class uses (so tests can drive it with a fake kernel). */
export interface IKernelLike {
  readonly id: string;
  readonly status: Kernel.Status;
  readonly statusChanged: ISignal<any, Kernel.Status>;
  readonly connectionStatusChanged: ISignal<any, Kernel.ConnectionStatus>;
  readonly iopubMessage: ISignal<any, KernelMessage.IIOPubMessage>;
  readonly handleComms: boolean;
  readonly isDisposed: boolean;
  createComm(targetName: string, commId?: string): Kernel.IComm;
  registerCommTarget(targetName: string, callback: CommTarget): void;
  removeCommTarget(targetName: string, callback: CommTarget): void;
  interrupt(): Promise<void>;
}

const GONE: ReadonlySet<Kernel.Status> = new Set<Kernel.Status>(['restarting', 'autorestarting', 'dead']);

export interface IKernelRunsOptions {
  ackTimeoutMs?: number;
  now?: () => number;
  /** Names this browser tab to the kernel, the same across reloads, so the kernel drops the tab's older comms. */
  frontendId?: string;
}

export class KernelRuns {
  readonly model: RunsModel;

  constructor(kernel: IKernelLike, options: IKernelRunsOptions = {}) {
    this._kernel = kernel;
    this._frontendId = options.frontendId ?? '';
    this.model = new RunsModel(options.now);
    this._cancels = new CancelRequests(
      {
        send: message => this._send(message),
        interrupt: () => this._kernel.interrupt(),
        isForeground: run => this.isForeground(run.run_id)
      },
      { ackTimeoutMs: options.ackTimeoutMs }
    );
    if (!kernel.handleComms) {
      // JupyterLab gives comms to one connection per kernel (the first); another view's connection owns them.
      this.model.setConnection('no-comms');
      return;
    }
    kernel.registerCommTarget(COMM_TARGET, this._onKernelOpened);
    kernel.statusChanged.connect(this._onStatus, this);
    kernel.connectionStatusChanged.connect(this._onConnectionStatus, this);
    kernel.iopubMessage.connect(this._onIopub, this);
    this.connect();
  }

  get ownsComms(): boolean {
    return this._kernel.handleComms;
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
    this._adopt(comm, true);
    this.model.setConnection('connecting');
    this._try(comm, 'opening the comm', () => {
      comm.open({ frontend_id: this._frontendId }).done.catch(() => this._drop(comm));
    });
  }

  /** Cancel a run (see CancelRequests for when the kernel gets interrupted instead). */
  async cancel(runId: string): Promise<CancelOutcome> {
    const run = this.model.get(runId);
    if (run === undefined || !isActive(run.state)) {
      return 'not-running';
    }
    this.model.setCancelling(runId, true);
    const outcome = await this._cancels.cancel(run);
    if (outcome === 'not-running' || outcome === 'not-sent') {
      this.model.setCancelling(runId, false);
    }
    return outcome;
  }

  /**
   * Whether a kernel interrupt would stop this run and nothing else: it is still active, it is not a background
   * run, and it is the execute_request the kernel's main shell is busy with. When this page joined the kernel
   * mid-cell (a reload) there was no busy status to see; an active foreground run then *is* the running cell,
   * because a foreground run blocks its cell until it ends.
   */
  isForeground(runId: string): boolean {
    const run: IRun | undefined = this.model.get(runId);
    if (run === undefined || !isActive(run.state) || run.background || run.msg_id === null) {
      return false;
    }
    return this._foregroundKnown ? run.msg_id === this._foreground : true;
  }

  /** The page is going away: close the comm it opened, so the kernel stops sending to it. */
  leave(): void {
    if (this._comm !== null && this._ownComm) {
      this._release(this._comm);
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._kernel.handleComms) {
      if (!this._kernel.isDisposed) {
        this._kernel.removeCommTarget(COMM_TARGET, this._onKernelOpened);
      }
      this._kernel.statusChanged.disconnect(this._onStatus, this);
      this._kernel.connectionStatusChanged.disconnect(this._onConnectionStatus, this);
      this._kernel.iopubMessage.disconnect(this._onIopub, this);
    }
    this.leave();
    this._comm = null;
  }

  /** Do something with the comm; if that throws (the kernel went away), drop the comm. Returns whether it worked. */
  private _try(comm: Kernel.IComm, what: string, action: () => void): boolean {
    try {
      action();
      return true;
    } catch (error) {
      console.debug(`mini_magic: ${what} failed`, error);
      this._drop(comm);
      return false;
    }
  }

  private _onKernelOpened = (comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void => {
    if (this._disposed) {
      return;
    }
    this._adopt(comm, false);
    this._handle(msg.content.data);
  };

  private _adopt(comm: Kernel.IComm, own: boolean): void {
    const previous = this._comm;
    const previousOwn = this._ownComm;
    this._comm = comm;
    this._ownComm = own;
    comm.onMsg = msg => this._handle(msg.content.data);
    comm.onClose = () => this._drop(comm);
    if (previous !== null && previous !== comm && previousOwn) {
      this._release(previous);
    }
  }

  /** Let go of a comm this page opened: closed in the kernel too while the kernel is there. */
  private _release(comm: Kernel.IComm): void {
    if (comm.isDisposed) {
      return;
    }
    comm.onClose = () => undefined;
    if (this._kernel.isDisposed) {
      comm.dispose();
    } else {
      this._try(comm, 'closing the comm', () => comm.close());
    }
  }

  private _drop(comm: Kernel.IComm): void {
    if (this._comm === comm) {
      this._comm = null;
      this.model.setConnection('absent');
    }
  }

  private _handle(data: unknown): void {
    const message = parseKernelMessage(data);
    if (message === null) {
      return;
    }
    if (message.type === 'cancel_ack') {
      this._cancels.handleAck(message);
    } else if (message.type === 'closing') {
      // %unload_ext: the kernel has forgotten this comm without a comm_close (which every other page would log as
      // an unknown comm); forget it here too, without telling the kernel.
      const comm = this._comm;
      if (comm !== null) {
        comm.dispose();
        this._drop(comm);
      }
    } else {
      this.model.apply(message);
    }
  }

  private _send(message: FrontendMessage): boolean {
    const comm = this._comm;
    if (comm === null || comm.isDisposed || !this.model.connected) {
      return false;
    }
    return this._try(comm, 'sending on the comm', () => comm.send(message as any));
  }

  private _onStatus(_: unknown, status: Kernel.Status): void {
    if (GONE.has(status)) {
      // A restart disposes the kernel's comms without closing them, and the runs died with the process.
      this._comm = null;
      this._foreground = null;
      this._foregroundKnown = true; // a new process runs nothing
      this._restarted = true;
      this.model.setConnection('absent');
    } else if (status === 'idle' && this._restarted) {
      // The new process may load mini_magic at startup (ipython_config's extensions): ask once.
      this._restarted = false;
      this.connect();
    }
  }

  private _onConnectionStatus(_: unknown, status: Kernel.ConnectionStatus): void {
    if (status === 'connected' && this._comm !== null && this.model.connected) {
      // Back from a network blip: events may have been lost; the kernel's snapshot is the truth.
      this._send({ type: 'snapshot_request' });
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
      this._foregroundKnown = true;
    } else if (state === 'idle') {
      if (this._foreground === parent.msg_id) {
        this._foreground = null;
      }
      this._foregroundKnown = true;
    }
  }

  private _kernel: IKernelLike;
  private _frontendId: string;
  private _cancels: CancelRequests;
  private _comm: Kernel.IComm | null = null;
  private _ownComm = false;
  private _foreground: string | null = null;
  private _foregroundKnown = false;
  private _restarted = false;
  private _disposed = false;
}
