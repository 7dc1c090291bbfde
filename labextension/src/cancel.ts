/**
 * Cancel a run: ask over the comm, and fall back to a kernel interrupt only where that is safe.
 *
 * A kernel without comms over subshells handles comm messages only between cells, so a Cancel for the cell that is
 * running now is not even read until that cell ends. When no acknowledgement comes in time and the run IS the
 * kernel's current foreground cell (its execute_request msg id is the one the kernel is busy with), interrupting the
 * kernel stops exactly that run. A background run is never interrupted: the interrupt would hit whatever cell the
 * user runs meanwhile.
 */

import { ICancelAckMessage, ICancelRequest, IRun } from './protocol';

export interface ICancelTransport {
  /** Send over the comm; false when there is no open comm. */
  send(message: ICancelRequest): boolean;
  interrupt(): Promise<void>;
  /** Whether interrupting the kernel now stops this run and nothing else (asked again at the last moment). */
  isForeground(run: IRun): boolean;
}

/**
 * - `acknowledged`: the kernel delivered the cancel to the run.
 * - `not-running`: the kernel answered but the run had already ended (or is unknown).
 * - `interrupted`: no answer in time; the run was the foreground cell, so the kernel was interrupted.
 * - `unacknowledged`: no answer in time and interrupting would not be safe; the kernel reads the request later.
 * - `not-sent`: there is no comm to send it on, and interrupting would not be safe.
 */
export type CancelOutcome = 'acknowledged' | 'not-running' | 'interrupted' | 'unacknowledged' | 'not-sent';

export interface ICancelOptions {
  ackTimeoutMs?: number;
  newRequestId?: () => string;
}

let counter = 0;

export class CancelRequests {
  constructor(transport: ICancelTransport, options: ICancelOptions = {}) {
    this._transport = transport;
    this._ackTimeoutMs = options.ackTimeoutMs ?? 2000;
    this._newRequestId = options.newRequestId ?? (() => `cancel-${Date.now().toString(36)}-${++counter}`);
  }

  cancel(run: IRun): Promise<CancelOutcome> {
    const requestId = this._newRequestId();
    return new Promise<CancelOutcome>(resolve => {
      const timer = setTimeout(() => {
        this._pending.delete(requestId);
        void this._fallBack(run, 'unacknowledged').then(resolve);
      }, this._ackTimeoutMs);
      this._pending.set(requestId, ack => {
        clearTimeout(timer);
        resolve(ack.delivered ? 'acknowledged' : 'not-running');
      });
      if (!this._transport.send({ type: 'cancel', run_id: run.run_id, request_id: requestId })) {
        clearTimeout(timer);
        this._pending.delete(requestId);
        void this._fallBack(run, 'not-sent').then(resolve);
      }
    });
  }

  /** Feed every cancel_ack from the kernel here. */
  handleAck(ack: ICancelAckMessage): void {
    const settle = this._pending.get(ack.request_id);
    if (settle !== undefined) {
      this._pending.delete(ack.request_id);
      settle(ack);
    }
  }

  private async _fallBack(run: IRun, otherwise: CancelOutcome): Promise<CancelOutcome> {
    if (!this._transport.isForeground(run)) {
      return otherwise;
    }
    await this._transport.interrupt();
    return 'interrupted';
  }

  private _transport: ICancelTransport;
  private _ackTimeoutMs: number;
  private _newRequestId: () => string;
  private _pending = new Map<string, (ack: ICancelAckMessage) => void>();
}
