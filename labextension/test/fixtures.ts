/** Test helpers: run records as the kernel sends them. */

import { IRun, RunState } from '../src/protocol';

let created = 1000;

export function run(overrides: Partial<IRun> & { run_id: string; state?: RunState }): IRun {
  return {
    backend: 'local',
    state: 'running',
    profile: { gpu: null },
    cell_id: null,
    msg_id: null,
    kernel_id: 'k1',
    label: 'x = 1',
    created_at: created++,
    started_at: null,
    finished_at: null,
    elapsed: 0,
    error: null,
    outputs: [],
    remote_id: null,
    background: false,
    execution_count: null,
    progress: null,
    ...overrides
  };
}
