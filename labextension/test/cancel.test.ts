import { CancelRequests, ICancelTransport } from '../src/cancel';
import { ICancelRequest, IRun } from '../src/protocol';
import { run } from './fixtures';

class FakeTransport implements ICancelTransport {
  sent: ICancelRequest[] = [];
  interrupts = 0;
  open = true;
  foreground: string | null = null;
  asked: string[] = [];
  send(message: ICancelRequest): boolean {
    if (this.open) {
      this.sent.push(message);
    }
    return this.open;
  }
  interrupt(): Promise<void> {
    this.interrupts++;
    return Promise.resolve();
  }
  /** The rule itself lives in KernelRuns (tested there); here: the run's msg id against the busy one. */
  isForeground(run: IRun): boolean {
    this.asked.push(run.run_id);
    return !run.background && run.msg_id !== null && run.msg_id === this.foreground;
  }
}

describe('CancelRequests', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  it('settles on the acknowledgement and never interrupts', async () => {
    const transport = new FakeTransport();
    transport.foreground = 'm1';
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 1000 });
    const outcome = cancels.cancel(run({ run_id: 'a', msg_id: 'm1' }));
    expect(transport.sent).toEqual([{ type: 'cancel', run_id: 'a', request_id: expect.any(String) }]);
    cancels.handleAck({ type: 'cancel_ack', run_id: 'a', request_id: transport.sent[0].request_id, delivered: true });
    await expect(outcome).resolves.toBe('acknowledged');
    jest.advanceTimersByTime(5000);
    expect(transport.interrupts).toBe(0);
  });

  it('reports a run that had already ended', async () => {
    const transport = new FakeTransport();
    const cancels = new CancelRequests(transport);
    const outcome = cancels.cancel(run({ run_id: 'a' }));
    cancels.handleAck({ type: 'cancel_ack', run_id: 'a', request_id: transport.sent[0].request_id, delivered: false });
    await expect(outcome).resolves.toBe('not-running');
  });

  it('interrupts the kernel when no answer comes and the run is the foreground cell', async () => {
    const transport = new FakeTransport();
    transport.foreground = 'm1';
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 1000 });
    const outcome = cancels.cancel(run({ run_id: 'a', msg_id: 'm1' }));
    jest.advanceTimersByTime(999);
    expect(transport.interrupts).toBe(0);
    jest.advanceTimersByTime(1);
    await expect(outcome).resolves.toBe('interrupted');
    expect(transport.interrupts).toBe(1);
  });

  it.each([
    ['a background run', run({ run_id: 'a', msg_id: 'm1', background: true })],
    ['a run from another cell', run({ run_id: 'a', msg_id: 'm0' })],
    ['a run with no msg id', run({ run_id: 'a', msg_id: null })]
  ])('never interrupts for %s', async (_, target) => {
    const transport = new FakeTransport();
    transport.foreground = 'm1';
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 1000 });
    const outcome = cancels.cancel(target);
    jest.advanceTimersByTime(1000);
    await expect(outcome).resolves.toBe('unacknowledged');
    expect(transport.interrupts).toBe(0);
  });

  it('falls back at once when there is no comm', async () => {
    const transport = new FakeTransport();
    transport.open = false;
    transport.foreground = 'm1';
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 60_000 });
    await expect(cancels.cancel(run({ run_id: 'a', msg_id: 'm1' }))).resolves.toBe('interrupted');
    await expect(cancels.cancel(run({ run_id: 'b', msg_id: 'm0' }))).resolves.toBe('not-sent');
  });

  it('asks whether the run is the foreground cell only when the answer is due, not at the click', async () => {
    const transport = new FakeTransport();
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 1000 });
    const outcome = cancels.cancel(run({ run_id: 'a', msg_id: 'm1' }));
    expect(transport.asked).toEqual([]);
    transport.foreground = 'm1';
    jest.advanceTimersByTime(1000);
    await expect(outcome).resolves.toBe('interrupted');
    expect(transport.asked).toEqual(['a']);
  });

  it('ignores an acknowledgement that arrives after the fallback', async () => {
    const transport = new FakeTransport();
    const cancels = new CancelRequests(transport, { ackTimeoutMs: 10 });
    const outcome = cancels.cancel(run({ run_id: 'a' }));
    jest.advanceTimersByTime(10);
    await expect(outcome).resolves.toBe('unacknowledged');
    expect(() =>
      cancels.handleAck({ type: 'cancel_ack', run_id: 'a', request_id: transport.sent[0].request_id, delivered: true })
    ).not.toThrow();
  });
});
