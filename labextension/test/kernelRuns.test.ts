import { Signal } from '@lumino/signaling';

import { IKernelLike, KernelRuns } from '../src/kernelRuns';
import { run } from './fixtures';

type Handler = (comm: any, msg: any) => void;

/** A comm as KernelRuns uses it: records what is sent, lets the test play the kernel's side. */
class FakeComm {
  sent: unknown[] = [];
  opened = false;
  closed = false;
  isDisposed = false;
  onMsg: ((msg: any) => void) | null = null;
  onClose: ((msg: any) => void) | null = null;
  open(): { done: Promise<void> } {
    this.opened = true;
    return { done: Promise.resolve() };
  }
  send(data: unknown): void {
    this.sent.push(data);
  }
  close(): void {
    this.closed = true;
  }
  fromKernel(data: unknown): void {
    this.onMsg?.({ content: { data } });
  }
  closedByKernel(): void {
    this.onClose?.({});
    this.isDisposed = true;
  }
}

class FakeKernel implements IKernelLike {
  status: any = 'idle';
  statusChanged = new Signal<any, any>(this);
  iopubMessage = new Signal<any, any>(this);
  handleComms = true;
  isDisposed = false;
  comms: FakeComm[] = [];
  targets = new Map<string, Handler>();
  interrupts = 0;
  createComm(): any {
    const comm = new FakeComm();
    this.comms.push(comm);
    return comm;
  }
  registerCommTarget(name: string, callback: Handler): void {
    this.targets.set(name, callback);
  }
  removeCommTarget(name: string): void {
    this.targets.delete(name);
  }
  interrupt(): Promise<void> {
    this.interrupts++;
    return Promise.resolve();
  }
  setStatus(status: string): void {
    this.status = status;
    this.statusChanged.emit(status);
  }
  executionStatus(state: 'busy' | 'idle', msgId: string, subshellId: string | null = null): void {
    this.iopubMessage.emit({
      header: { msg_type: 'status' },
      parent_header: { msg_type: 'execute_request', msg_id: msgId, subshell_id: subshellId },
      content: { execution_state: state }
    });
  }
}

const snapshot = (runs: unknown[]) => ({ type: 'snapshot', protocol: 1, kernel_id: 'k', runs });

describe('KernelRuns', () => {
  it('opens a comm on a kernel it meets and fills the model from the snapshot', () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    expect(kernel.comms).toHaveLength(1);
    expect(kernel.comms[0].opened).toBe(true);
    kernel.comms[0].fromKernel(snapshot([run({ run_id: 'a' })]));
    expect(runs.model.connected).toBe(true);
    expect(runs.model.runs.map(r => r.run_id)).toEqual(['a']);
  });

  it('stays quiet and disconnected when the kernel has not loaded mini_magic', () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    kernel.comms[0].closedByKernel();
    expect(runs.model.connected).toBe(false);
    expect(runs.model.summary()).toBeNull();
  });

  it('accepts the comm the kernel opens at %load_ext', () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    kernel.comms[0].closedByKernel();
    const announced = new FakeComm();
    kernel.targets.get('mini_magic')!(announced, { content: { data: snapshot([run({ run_id: 'b' })]) } });
    expect(runs.model.connected).toBe(true);
    expect(runs.model.get('b')).toBeDefined();
    announced.fromKernel({ type: 'run', event: 'finished', run: run({ run_id: 'b', state: 'done' }) });
    expect(runs.model.get('b')?.state).toBe('done');
  });

  it('forgets the runs of a restarted kernel and asks the new process once it is idle', () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    kernel.comms[0].fromKernel(snapshot([run({ run_id: 'a' })]));
    kernel.setStatus('restarting');
    expect(runs.model.runs).toEqual([]);
    expect(runs.model.connected).toBe(false);
    kernel.setStatus('starting');
    expect(kernel.comms).toHaveLength(1);
    kernel.setStatus('idle');
    expect(kernel.comms).toHaveLength(2);
    kernel.setStatus('busy');
    kernel.setStatus('idle');
    expect(kernel.comms).toHaveLength(2);
  });

  it('interrupts only for the cell the main shell is executing', async () => {
    jest.useFakeTimers();
    try {
      const kernel = new FakeKernel();
      const runs = new KernelRuns(kernel, { ackTimeoutMs: 100 });
      const comm = kernel.comms[0];
      comm.fromKernel(snapshot([run({ run_id: 'fg', msg_id: 'm1' }), run({ run_id: 'bg', msg_id: 'm0', background: true })]));
      kernel.executionStatus('busy', 'm1');
      kernel.executionStatus('busy', 'sub', 'subshell-1');
      expect(runs.isForeground('fg')).toBe(true);
      expect(runs.isForeground('bg')).toBe(false);

      const background = runs.cancel('bg');
      jest.advanceTimersByTime(100);
      await expect(background).resolves.toBe('unacknowledged');
      expect(kernel.interrupts).toBe(0);

      const foreground = runs.cancel('fg');
      expect(runs.model.isCancelling('fg')).toBe(true);
      jest.advanceTimersByTime(100);
      await expect(foreground).resolves.toBe('interrupted');
      expect(kernel.interrupts).toBe(1);

      kernel.executionStatus('idle', 'm1');
      expect(runs.isForeground('fg')).toBe(false);
    } finally {
      jest.useRealTimers();
    }
  });

  it('routes cancel acknowledgements to the request', async () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    const comm = kernel.comms[0];
    comm.fromKernel(snapshot([run({ run_id: 'a' })]));
    const outcome = runs.cancel('a');
    const request = comm.sent[0] as { request_id: string };
    comm.fromKernel({ type: 'cancel_ack', run_id: 'a', request_id: request.request_id, delivered: true });
    await expect(outcome).resolves.toBe('acknowledged');
  });

  it('leaves a kernel connection that cannot own comms alone', () => {
    const kernel = new FakeKernel();
    kernel.handleComms = false;
    new KernelRuns(kernel);
    expect(kernel.comms).toHaveLength(0);
    expect(kernel.targets.size).toBe(0);
  });

  it('closes its comm and unregisters on dispose', () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    runs.dispose();
    expect(kernel.comms[0].closed).toBe(true);
    expect(kernel.targets.size).toBe(0);
  });
});
