import { formatElapsed, RunsModel, statusText } from '../src/model';
import { parseKernelMessage, parseRun } from '../src/protocol';
import { run } from './fixtures';

function clock(start = 0): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: ms => (t += ms) };
}

describe('RunsModel', () => {
  it('replaces everything with a snapshot and counts as connected', () => {
    const model = new RunsModel();
    model.apply({ type: 'run', event: 'created', run: run({ run_id: 'old', state: 'queued' }) });
    model.apply({ type: 'snapshot', protocol: 1, kernel_id: 'k2', runs: [run({ run_id: 'a', state: 'done' })] });
    expect(model.connected).toBe(true);
    expect(model.kernelId).toBe('k2');
    expect(model.runs.map(r => r.run_id)).toEqual(['a']);
  });

  it('lists runs newest first', () => {
    const model = new RunsModel();
    const first = run({ run_id: 'first', created_at: 1 });
    const second = run({ run_id: 'second', created_at: 2 });
    model.apply({ type: 'snapshot', protocol: 1, kernel_id: null, runs: [first, second] });
    expect(model.runs.map(r => r.run_id)).toEqual(['second', 'first']);
  });

  it('never moves a run back to an earlier state when events cross', () => {
    const model = new RunsModel();
    model.apply({ type: 'run', event: 'finished', run: run({ run_id: 'a', state: 'done', elapsed: 3 }) });
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a', state: 'running', elapsed: 0 }) });
    expect(model.get('a')?.state).toBe('done');
    model.apply({ type: 'run', event: 'created', run: run({ run_id: 'b', state: 'running' }) });
    model.apply({ type: 'run', event: 'created', run: run({ run_id: 'b', state: 'queued' }) });
    expect(model.get('b')?.state).toBe('running');
  });

  it('ticks the elapsed time of running runs locally and freezes finished ones', () => {
    const c = clock();
    const model = new RunsModel(c.now);
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a', elapsed: 2 }) });
    c.advance(61_500);
    expect(model.elapsed(model.get('a')!)).toBeCloseTo(63.5);
    model.apply({ type: 'run', event: 'finished', run: run({ run_id: 'a', state: 'done', elapsed: 64 }) });
    c.advance(10_000);
    expect(model.elapsed(model.get('a')!)).toBe(64);
  });

  it('summarises active runs for the status bar', () => {
    const c = clock();
    const model = new RunsModel(c.now);
    expect(model.summary()).toBeNull();
    model.apply({
      type: 'snapshot',
      protocol: 1,
      kernel_id: 'k',
      runs: [
        run({ run_id: 'a', profile: { gpu: 'L4' }, elapsed: 83 }),
        run({ run_id: 'b', profile: { gpu: 'L4' }, elapsed: 5 }),
        run({ run_id: 'c', state: 'done', profile: { gpu: 'A100' } })
      ]
    });
    expect(statusText(model.summary()!)).toBe('⚡ 2 running · L4 · 01:23');
    model.apply({ type: 'run', event: 'created', run: run({ run_id: 'd', state: 'queued', elapsed: null }) });
    expect(statusText(model.summary()!)).toBe('⚡ 2 running, 1 queued · L4, local · 01:23');
  });

  it('keeps a failure visible until it is seen, but not failures from before this page', () => {
    const model = new RunsModel();
    model.apply({
      type: 'snapshot',
      protocol: 1,
      kernel_id: 'k',
      runs: [run({ run_id: 'old', state: 'failed', error: 'ValueError: x' })]
    });
    expect(model.summary()).toBeNull();
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a' }) });
    model.apply({ type: 'run', event: 'finished', run: run({ run_id: 'a', state: 'failed', error: 'E' }) });
    expect(statusText(model.summary()!)).toBe('⚠ 1 failed');
    expect(model.isUnseenFailure('a')).toBe(true);
    model.markSeen();
    expect(model.summary()).toBeNull();
  });

  it('marks a run as cancelling until it ends', () => {
    const model = new RunsModel();
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a' }) });
    model.setCancelling('a', true);
    expect(model.isCancelling('a')).toBe(true);
    model.apply({ type: 'run', event: 'finished', run: run({ run_id: 'a', state: 'cancelled' }) });
    expect(model.isCancelling('a')).toBe(false);
    model.setCancelling('a', true);
    expect(model.isCancelling('a')).toBe(false);
  });

  it('forgets everything when the connection goes and says so', () => {
    const model = new RunsModel();
    let changes = 0;
    model.changed.connect(() => changes++);
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a' }) });
    model.setConnection('absent');
    expect(model.runs).toEqual([]);
    expect(model.connected).toBe(false);
    expect(changes).toBe(2);
  });

  it('ticks only while something runs', () => {
    const model = new RunsModel();
    let changes = 0;
    model.changed.connect(() => changes++);
    expect(model.tick()).toBe(false);
    model.apply({ type: 'run', event: 'started', run: run({ run_id: 'a' }) });
    expect(model.tick()).toBe(true);
    expect(changes).toBe(2);
  });
});

describe('formatElapsed', () => {
  it.each([
    [null, '–'],
    [0, '00:00'],
    [59.9, '00:59'],
    [83, '01:23'],
    [3723, '1:02:03']
  ])('%p -> %p', (seconds, text) => {
    expect(formatElapsed(seconds)).toBe(text);
  });
});

describe('parseKernelMessage', () => {
  it('accepts what the kernel sends and keeps unknown fields out of the way', () => {
    const message = parseKernelMessage({
      type: 'run',
      event: 'started',
      run: { ...run({ run_id: 'a' }), future_field: 1, profile: { gpu: 'L4', timeout: 5 } }
    });
    expect(message?.type).toBe('run');
    expect(message?.type === 'run' && message.run.profile.gpu).toBe('L4');
  });

  it.each([
    null,
    'snapshot',
    { type: 'unknown' },
    { type: 'snapshot' },
    { type: 'run', event: 'started', run: { run_id: 'a' } },
    { type: 'run', event: 'exploded', run: run({ run_id: 'a' }) },
    { type: 'cancel_ack', run_id: 'a' }
  ])('drops malformed message %p', data => {
    expect(parseKernelMessage(data)).toBeNull();
  });

  it('drops bad runs from a snapshot but keeps the good ones', () => {
    const message = parseKernelMessage({
      type: 'snapshot',
      protocol: 1,
      kernel_id: 'k',
      runs: [run({ run_id: 'good' }), { run_id: 'bad', state: 'weird', created_at: 1 }]
    });
    expect(message?.type === 'snapshot' && message.runs.map(r => r.run_id)).toEqual(['good']);
  });

  it('reads progress only when it has a count', () => {
    expect(parseRun({ ...run({ run_id: 'a' }), progress: { n: 3, total: 10, desc: 'epochs' } })?.progress).toEqual({
      n: 3,
      total: 10,
      desc: 'epochs'
    });
    expect(parseRun({ ...run({ run_id: 'a' }), progress: { total: 10 } })?.progress).toBeNull();
  });
});

describe('RunsModel snapshots', () => {
  it('keep a later state that a run event brought before the snapshot', () => {
    const model = new RunsModel();
    model.apply({ type: 'run', event: 'finished', run: run({ run_id: 'a', state: 'done' }) });
    model.apply({ type: 'snapshot', protocol: 1, kernel_id: 'k', runs: [run({ run_id: 'a', state: 'running' })] });
    expect(model.get('a')?.state).toBe('done');
  });
});
