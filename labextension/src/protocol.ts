/**
 * The `mini_magic` comm protocol (version 1), as the kernel side (mini_magic/status.py) speaks it.
 *
 * Messages from the kernel are checked here, once, so the model and the views can trust their shape: a kernel
 * running a newer mini_magic may add fields (kept, ignored) but a message without the fields we need is dropped.
 */

export const COMM_TARGET = 'mini_magic';
export const PROTOCOL = 1;

/** Every state of a run, as mini_magic.runs.RunState spells them: the one list, the type derives from it. */
export const RUN_STATES = ['queued', 'running', 'done', 'failed', 'cancelled'] as const;

export type RunState = (typeof RUN_STATES)[number];

function isRunState(value: string): value is RunState {
  return (RUN_STATES as readonly string[]).includes(value);
}

/** One run as the kernel's run registry records it (RunRecord.to_json plus `elapsed`). */
export interface IRun {
  run_id: string;
  backend: string;
  state: RunState;
  profile: { gpu?: string | null; [key: string]: unknown };
  cell_id: string | null;
  msg_id: string | null;
  kernel_id: string | null;
  label: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  /** Seconds spent running when the kernel sent this record; null if it never started. */
  elapsed: number | null;
  error: string | null;
  outputs: string[];
  remote_id: string | null;
  background: boolean;
  execution_count: number | null;
  progress: IProgress | null;
}

/** The newest mirrored tqdm bar of a run, if it has one. */
export interface IProgress {
  n: number;
  total: number | null;
  desc: string;
}

export interface ISnapshotMessage {
  type: 'snapshot';
  protocol: number;
  kernel_id: string | null;
  runs: IRun[];
}

export interface IRunMessage {
  type: 'run';
  event: 'created' | 'started' | 'updated' | 'finished';
  run: IRun;
}

export interface ICancelAckMessage {
  type: 'cancel_ack';
  run_id: string;
  request_id: string;
  delivered: boolean;
}

/** The kernel forgot this comm (`%unload_ext`): the frontend drops it without a comm_close. */
export interface IClosingMessage {
  type: 'closing';
}

export type KernelMessage = ISnapshotMessage | IRunMessage | ICancelAckMessage | IClosingMessage;

export interface ICancelRequest {
  type: 'cancel';
  run_id: string;
  request_id: string;
}

export interface ISnapshotRequest {
  type: 'snapshot_request';
}

export type FrontendMessage = ICancelRequest | ISnapshotRequest;

type Json = { [key: string]: unknown };

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function num(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

function parseProgress(value: unknown): IProgress | null {
  if (!isObject(value) || num(value.n) === null) {
    return null;
  }
  return { n: num(value.n) as number, total: num(value.total), desc: str(value.desc) ?? '' };
}

/** A run record from the kernel, or null if it lacks what the views need. */
export function parseRun(value: unknown): IRun | null {
  if (!isObject(value)) {
    return null;
  }
  const runId = str(value.run_id);
  const state = str(value.state);
  const createdAt = num(value.created_at);
  if (runId === null || state === null || !isRunState(state) || createdAt === null) {
    return null;
  }
  const profile = isObject(value.profile) ? value.profile : {};
  return {
    run_id: runId,
    backend: str(value.backend) ?? '?',
    state,
    profile: { ...profile, gpu: str(profile.gpu) },
    cell_id: str(value.cell_id),
    msg_id: str(value.msg_id),
    kernel_id: str(value.kernel_id),
    label: str(value.label),
    created_at: createdAt,
    started_at: num(value.started_at),
    finished_at: num(value.finished_at),
    elapsed: num(value.elapsed),
    error: str(value.error),
    outputs: Array.isArray(value.outputs) ? value.outputs.filter((o): o is string => typeof o === 'string') : [],
    remote_id: str(value.remote_id),
    background: value.background === true,
    execution_count: num(value.execution_count),
    progress: parseProgress(value.progress)
  };
}

/** A message from the kernel, or null for anything this frontend does not understand. */
export function parseKernelMessage(data: unknown): KernelMessage | null {
  if (!isObject(data)) {
    return null;
  }
  switch (data.type) {
    case 'snapshot': {
      if (!Array.isArray(data.runs)) {
        return null;
      }
      const runs = data.runs.map(parseRun).filter((r): r is IRun => r !== null);
      return { type: 'snapshot', protocol: num(data.protocol) ?? 0, kernel_id: str(data.kernel_id), runs };
    }
    case 'run': {
      const run = parseRun(data.run);
      const event = str(data.event);
      if (run === null || event === null || !['created', 'started', 'updated', 'finished'].includes(event)) {
        return null;
      }
      return { type: 'run', event: event as IRunMessage['event'], run };
    }
    case 'cancel_ack': {
      const runId = str(data.run_id);
      const requestId = str(data.request_id);
      if (runId === null || requestId === null) {
        return null;
      }
      return { type: 'cancel_ack', run_id: runId, request_id: requestId, delivered: data.delivered === true };
    }
    case 'closing':
      return { type: 'closing' };
    default:
      return null;
  }
}

export function isActive(state: RunState): boolean {
  return state === 'queued' || state === 'running';
}
