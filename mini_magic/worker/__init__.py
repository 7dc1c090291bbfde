"""Everything that runs remotely: in a local worker process, or in a Modal container.

The kernel/worker split of mini_magic is this folder. A module here imports only the standard library, cloudpickle,
other modules of this package and the small contract both sides share (``mini_magic.wire`` and the modules it uses,
``channel``, ``scrub``, ``proctree``, ``library_settings``, ``placeholder``, ``figure_formats``): a worker must start
fast and must work where IPython, ipykernel or jupyter are not installed. IPython is used only where it is
optional, imported inside a function that falls back when it is missing (the display bridge, IPython's SList).
tests/unit/test_layout.py checks the rule.

- ``__main__``: the local entry point (``python -m mini_magic.worker``): boot line, socket, job loop.
- ``keeper``: the local worker's parent process (``python -m mini_magic.worker.keeper``), the end of its tree.
- ``modal``: the Modal container entry point (``run_job``) and its queue transport.
- ``bootstrap``: the set-up both entry points share.
- ``runner``: the Worker, which runs one job after another; ``context``: the run in progress, for every thread.
- ``output``, ``display``, ``tqdm_mirror``, ``hither``: what a run emits (captured output, displays, progress
  bars, hither calls). ``inputs``, ``modules``, ``shell``, ``state``: what a run reads and what is restored after it.

Nothing is imported here: ``python -m mini_magic.worker.keeper`` must stay a small process.
"""
