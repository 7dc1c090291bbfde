import { Signal } from '@lumino/signaling';

import { IKernelLike, KernelRuns } from '../src/kernelRuns';
import { run } from './fixtures';

type Handler = (comm: any, msg: any) => void;

/** A comm as KernelRuns uses it: records what is sent, lets the test play the kernel's side. */
class FakeComm {
  sent: unknown[] = [];
  openedWith: unknown = undefined;
  closed = false;
  isDisposed = false;
  commId = `comm-${Math.random().toString(36).slice(2)}`;
  onMsg: ((msg: any) => void) | null = null;
  onClose: ((msg: any) => void) | null = null;
  get opened(): boolean {
    return this.openedWith !== undefined;
  }
  open(data: unknown): { done: Promise<void> } {
    this.openedWith = data;
    return { done: Promise.resolve() };
  }
  send(data: unknown): void {
    this.sent.push(data);
  }
  close(): { done: Promise<void> } {
    this.closed = true;
    this.isDisposed = true;
    return { done: Promise.resolve() };
  }
  dispose(): void {
    this.isDisposed = true;
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
  id = 'kernel-1';
  status: any = 'idle';
  statusChanged = new Signal<any, any>(this);
  connectionStatusChanged = new Signal<any, any>(this);
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
const settle = () => new Promise(resolve => setTimeout(resolve, 0));

async function connected(kernel: FakeKernel, runs: unknown[] = [], options = {}): Promise<KernelRuns> {
  const kernelRuns = new KernelRuns(kernel, { frontendId: 'tab-1', ...options });
  await settle();
  kernel.comms[kernel.comms.length - 1].fromKernel(snapshot(runs));
  return kernelRuns;
}

/** The kernel refuses the page's comm (mini_magic not loaded yet), then opens its own at %load_ext. */
async function loadedLater(kernel: FakeKernel, runs: unknown[] = []): Promise<[KernelRuns, FakeComm]> {
  const kernelRuns = new KernelRuns(kernel);
  await settle();
  kernel.comms[0].closedByKernel();
  const announced = new FakeComm();
  kernel.targets.get('mini_magic')!(announced, { content: { data: snapshot(runs) } });
  return [kernelRuns, announced];
}

describe('KernelRuns', () => {
  it('opens a comm naming its tab and fills the model from the snapshot', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'a' })]);
    expect(kernel.comms).toHaveLength(1);
    expect(kernel.comms[0].openedWith).toEqual({ frontend_id: 'tab-1' });
    expect(runs.model.connection).toBe('connected');
    expect(runs.model.runs.map(r => r.run_id)).toEqual(['a']);
  });

  it('stays quiet when the kernel has not loaded mini_magic', async () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    await settle();
    kernel.comms[0].closedByKernel();
    expect(runs.model.connection).toBe('absent');
    expect(runs.model.summary()).toBeNull();
  });

  it('accepts the comm the kernel opens at %load_ext', async () => {
    const kernel = new FakeKernel();
    const [runs, announced] = await loadedLater(kernel, [run({ run_id: 'b' })]);
    expect(runs.model.connected).toBe(true);
    announced.fromKernel({ type: 'run', event: 'finished', run: run({ run_id: 'b', state: 'done' }) });
    expect(runs.model.get('b')?.state).toBe('done');
  });

  it('closes its own comm when the kernel opens one (at %load_ext) and keeps that one', async () => {
    const kernel = new FakeKernel();
    const runs = new KernelRuns(kernel);
    const announced = new FakeComm();
    kernel.targets.get('mini_magic')!(announced, { content: { data: snapshot([]) } });
    expect(kernel.comms[0].closed).toBe(true);
    expect(runs.model.connected).toBe(true);
    announced.fromKernel({ type: 'run', event: 'created', run: run({ run_id: 'x', state: 'queued' }) });
    expect(runs.model.get('x')).toBeDefined();
  });

  it('forgets its runs when the comm is lost, so nothing ticks forever', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'a' })]);
    expect(runs.model.summary()).not.toBeNull();
    kernel.comms[0].fromKernel({ type: 'closing' });
    expect(runs.model.connection).toBe('absent');
    expect(runs.model.summary()).toBeNull();
    expect(kernel.comms[0].closed).toBe(false); // dropped locally: the kernel already forgot it
  });

  it('forgets the runs of a restarted kernel and asks the new process once it is idle', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'a' })]);
    kernel.setStatus('restarting');
    expect(runs.model.runs).toEqual([]);
    expect(runs.model.connection).toBe('absent');
    kernel.setStatus('starting');
    await settle();
    expect(kernel.comms).toHaveLength(1);
    kernel.setStatus('idle');
    await settle();
    expect(kernel.comms).toHaveLength(2);
    expect(kernel.comms[1].opened).toBe(true);
    kernel.setStatus('busy');
    kernel.setStatus('idle');
    await settle();
    expect(kernel.comms).toHaveLength(2);
  });

  it('asks for a fresh snapshot after a reconnect', async () => {
    const kernel = new FakeKernel();
    await connected(kernel);
    kernel.connectionStatusChanged.emit('connected');
    await settle();
    expect(kernel.comms[0].sent).toEqual([{ type: 'snapshot_request' }]);
  });

  it('treats as foreground only the active, non-background run of the busy execute_request', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [
      run({ run_id: 'fg', msg_id: 'm1' }),
      run({ run_id: 'other', msg_id: 'm0' }),
      run({ run_id: 'bg', msg_id: 'm1', background: true }),
      run({ run_id: 'over', msg_id: 'm1', state: 'done' })
    ]);
    kernel.executionStatus('busy', 'm1');
    kernel.executionStatus('busy', 'sub', 'subshell-1'); // a subshell's request is not the foreground cell
    expect(['fg', 'other', 'bg', 'over'].map(id => runs.isForeground(id))).toEqual([true, false, false, false]);
    kernel.executionStatus('idle', 'm1');
    expect(runs.isForeground('fg')).toBe(false);
  });

  it('after joining mid-cell (a reload), takes an active foreground run as the running cell', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'fg', msg_id: 'm1' }), run({ run_id: 'bg', msg_id: 'm1', background: true })]);
    expect(runs.isForeground('fg')).toBe(true);
    expect(runs.isForeground('bg')).toBe(false);
    kernel.executionStatus('idle', 'm1');
    expect(runs.isForeground('fg')).toBe(false);
  });

  it('interrupts for the foreground cell, never for a background run', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'fg', msg_id: 'm1' }), run({ run_id: 'bg', msg_id: 'm0', background: true })], {
      ackTimeoutMs: 10
    });
    kernel.executionStatus('busy', 'm1');
    await expect(runs.cancel('bg')).resolves.toBe('unacknowledged');
    expect(kernel.interrupts).toBe(0);
    const foreground = runs.cancel('fg');
    expect(runs.model.isCancelling('fg')).toBe(true);
    await expect(foreground).resolves.toBe('interrupted');
    expect(kernel.interrupts).toBe(1);
  });

  it('routes cancel acknowledgements to the request', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel, [run({ run_id: 'a' })]);
    const comm = kernel.comms[0];
    const outcome = runs.cancel('a');
    await settle();
    const request = comm.sent[0] as { request_id: string };
    comm.fromKernel({ type: 'cancel_ack', run_id: 'a', request_id: request.request_id, delivered: true });
    await expect(outcome).resolves.toBe('acknowledged');
  });

  it('says so when this connection cannot use comms', () => {
    const kernel = new FakeKernel();
    kernel.handleComms = false;
    const runs = new KernelRuns(kernel);
    expect(runs.model.connection).toBe('no-comms');
    expect(kernel.comms).toHaveLength(0);
    expect(kernel.targets.size).toBe(0);
  });

  it('closes the comm it opened and unregisters on dispose', async () => {
    const kernel = new FakeKernel();
    const runs = await connected(kernel);
    runs.dispose();
    await settle();
    expect(kernel.comms[0].closed).toBe(true);
    expect(kernel.targets.size).toBe(0);
  });

  it('never closes a comm the kernel opened (other pages share it)', async () => {
    const [runs, announced] = await loadedLater(new FakeKernel());
    runs.dispose();
    expect(announced.closed).toBe(false);
  });
});
