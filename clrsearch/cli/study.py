"""``python -m clrsearch.coarse`` and ``python -m clrsearch.fine``: flags and TOML to a config, then the study.

The study's imports (NumPy, Optuna, MLflow) take seconds that Ctrl-C may
interrupt; that ends with one line and status 130 like a Ctrl-C later on.
"""

import json
import os
import shlex
import sys
from dataclasses import replace

from ..errors import redact

from .args import entry_point


def run(kind, description, argv=None):
    """Parse the flags of ``kind`` ("coarse" or "fine"), run the study, print its summary; the exit status.

    A helper of ``--workers N`` (``$CLRSEARCH_HELPER`` set by its parent) takes
    the parent's resolved study definition instead of the flags and TOML. The
    other variables of :mod:`.environment` are read here, once.
    """
    try:
        from ..config import DEFAULT_SEARCH
        from ..search import workers
        from . import environment
        from .settings import apply_overrides, load_search_config, search_parser, take_auto_eta
    except KeyboardInterrupt:
        print("\ninterrupted before the study started", file=sys.stderr)
        raise SystemExit(130)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = search_parser(kind, description).parse_args(argv)
    text = os.environ.get(workers.HELPER_ENV)
    helper = json.loads(text) if text else None
    if helper is not None:
        config = apply_overrides(DEFAULT_SEARCH[kind], helper["config"], source=f"${workers.HELPER_ENV}")
    else:
        auto_eta = frozenset(take_auto_eta(args))
        config = load_search_config(kind, args)
    download = config.data.data_dir is None  # not into a folder the definition names
    timing = environment.worker_timing()
    if args.outage_seconds is not None:
        timing = replace(timing, outage_seconds=args.outage_seconds)
    config = replace(config, data=replace(config.data, data_dir=environment.data_dir(config.data.data_dir)),
                     timing=timing)
    os.environ.update(environment.tracking_retries())  # before helpers copy the environment
    machine = {"blas_threads": environment.blas_threads(), "core_slots": environment.core_slots(),
               "environ": dict(os.environ)}
    try:
        from ..outages import disk_full_in_one_line
        from ..search.runner import RunOptions, StudyRunner
        from .progress import progress_bar
    except KeyboardInterrupt:
        print("\ninterrupted before the study started", file=sys.stderr)
        raise SystemExit(130)
    one_line = disk_full_in_one_line(environment.store_folders(config.study.storage))
    if helper is not None:
        try:
            options = RunOptions(quiet=True, as_json=helper["as_json"], **machine)
            with one_line:
                return StudyRunner(config, options, helper, progress_bar).run()
        except KeyboardInterrupt:  # the parent stopped before this helper claimed a trial
            raise SystemExit(130)
    command = shlex.join(["python", "-m", f"clrsearch.{kind}", *argv])
    options = RunOptions(quiet=args.quiet or args.json, as_json=args.json, n_workers=args.workers, argv=tuple(argv),
                         command=command, auto_eta=auto_eta, download=download, **machine)
    try:
        with one_line:
            return StudyRunner(config, options, progress=progress_bar).run()
    except KeyboardInterrupt:  # before any trial ran: the study, if created, resumes from its queue
        print(f"\ninterrupted before any trial ran; to start the study, run the same command again: {redact(command)}",
              file=sys.stderr)
        raise SystemExit(130)


def command(kind, doc):
    """``main(argv=None)`` of the command ``python -m clrsearch.<kind>`` whose module docstring is ``doc``."""
    @entry_point
    def main(argv=None):
        return run(kind, doc.split("\n\n")[0], argv)

    return main
