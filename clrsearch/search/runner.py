"""A coarse or fine study end to end, as one object whose :meth:`StudyRunner.run` reads top to bottom:
data -> study -> claim -> train -> tell and log -> summary -> final model.

The process that runs a study *leads* it: it owns the study's MLflow run,
starts the helpers of ``--workers N``, prints the summary and trains the final
model. A helper only claims, trains and tells trials under its leader's run.
``python -m clrsearch.coarse`` and ``python -m clrsearch.fine``
(:mod:`clrsearch.cli.study`) build the config and the options and call it.
"""

import contextlib
import dataclasses
import errno
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace

import numpy as np
from optuna.trial import TrialState

from .. import tracking
from ..config import SECTIONS, RangeTest, flat_params
from ..data import load_folds, load_splits
from ..errors import UsageError, first_line, redact
from ..outages import full_disk
from ..nn.lrrange import run_range_test
from . import cores, final, queue, race, summary, workers
from .population import tell, total_steps, train_population
from .study import create_or_load, resolve_grid
from .summary import Timer


@dataclass(frozen=True)
class RunOptions:
    """How this process takes part in a study, beside the study's config."""

    quiet: bool = False  # no progress bars
    as_json: bool = False  # print only the summary, as one JSON object
    n_workers: int = 1  # processes on this machine sharing the study; n_workers - 1 helpers are started
    argv: tuple = ()  # the command's flags, handed on to helpers
    command: str | None = None  # the command line, shown in the hint to resume
    auto_eta: frozenset = frozenset()  # "eta_min", "eta_max": bounds taken from an LR range test first
    download: bool = True  # download CIFAR-10 when its folder is missing (not when the definition names it)
    blas_threads: int | None = None  # BLAS threads fixed, holding no core-sharing slot (None: share the cores)
    core_slots: str | None = None  # folder of the core-sharing slots (None: cores.default_slot_folder())
    environ: dict = field(default_factory=dict)  # the environment helpers start from: the command's


def no_progress(total, unit, quiet=False, description=None):
    """The default progress factory: no bar."""
    return contextlib.nullcontext()


class StudyRunner:
    """One process's part in a study: the leader's, or with ``helper`` (what a helper got from its parent,
    see :mod:`.workers`) a helper's.

    ``progress(total, unit, quiet, description)`` returns a context manager
    yielding an object with ``update(n)`` and ``set_postfix_str(text)``, or None.
    Everything that can be refused (flags, TOML, the storage URL, the tracking
    store, the data) is checked before the study or any MLflow run exists.
    """

    def __init__(self, config, options=RunOptions(), helper=None, progress=no_progress):
        self.request = config  # the study as the command defined it
        self.config = None  # the study as this process runs it, set once by open_study (see resolved_config)
        self.options = options
        self.helper = helper
        self.progress = progress
        self.quiet = options.quiet or helper is not None
        self.say = (lambda *a: None) if options.as_json else print
        self.timer = Timer()
        self.started = time.perf_counter()
        self.url = None
        self.shared = None  # queue.TrialQueue: the study in the storage this process opened
        self.parent = None  # the study's tracking.StudyRun
        self.inputs = None  # tracking.DataInputs of the study's splits, logged on its runs
        self.cores = None  # cores.CoreShare: this process's BLAS threads while it trains

    def run(self):
        """Run this process's part of the study; returns the exit status."""
        self.url = queue.storage_url(self.request.study.storage)
        if self.helper is not None:
            workers.die_with_parent(self.helper["parent_pid"])
        splits = self.load_data()
        etas = self.range_test_etas(splits) if self.options.auto_eta else {}
        share = cores.CoreShare(self.options.blas_threads, self.options.core_slots)
        with workers.sigterm_as_interrupt(), share as self.cores:
            study = self.open_study(etas)
            if self.helper is not None:
                return self.help(study, splits)
            return self.lead(study, splits)

    # ------------------------------------------------------------------ steps of run(), in order

    def load_data(self):
        """The study's splits, checked against the mini-batch size, and their description for its runs, once a
        leader has checked the tracking store (a server that is down is reported before the data is read)."""
        if self.helper is None:
            tracking.check_store(self.request.study.experiment)
        with self.timer.timed("data"):
            d = self.request.data
            load = load_folds if uses_folds(self.request) else load_splits
            splits = load(d, dtype=np.dtype(self.request.train.dtype), download=self.options.download)
            self.request.train.check_fits(splits.n_train)
            self.inputs = tracking.describe_splits(splits, d)
        return splits

    def open_study(self, etas):
        """Create or load the study, and set the config it runs with (:func:`resolved_config`)."""
        with queue.study_lock(self.url):
            study_storage = queue.open_storage(self.url, self.request.timing)
            self.config = resolved_config(self.request, etas, study_storage, self.options.n_workers)
            study = create_or_load(self.config, study_storage)
            self.shared = queue.TrialQueue(study, study_storage, self.url, self.config.timing)
        return study

    def help(self, study, splits):
        """A helper's part: train trials under the leader's run, leave the summary to it."""
        with tracking.StudyRun(self.config.study.experiment, tags={"study_name": self.config.study.name},
                               run_id=self.helper["parent_run_id"], inputs=self.inputs,
                               timing=self.config.timing) as parent:
            self.parent = parent
            try:
                self.train_all(study, splits)
            except KeyboardInterrupt:
                raise SystemExit(130)
        return 0

    def lead(self, study, splits):
        """The leader's part: its MLflow run, the helpers, the trials, the summary, the final model."""
        study_cfg = self.config.study
        tracking.end_dead_runs(study_cfg.experiment, self.config.timing.grace_seconds)
        tags = {"study_name": study_cfg.name, "kind": study_cfg.kind, "sampler": study_cfg.sampler,
                "storage": redact(self.url), "git_commit": tracking.git_commit(), "workers": self.options.n_workers}
        status = 0
        with tracking.StudyRun(study_cfg.experiment, f"{study_cfg.kind}:{study_cfg.name}",
                               flat_params(self.config), tags, inputs=self.inputs,
                               timing=self.config.timing) as parent:
            self.parent = parent
            helpers = []
            try:
                self.retry_lost()
                helpers = self.start_helpers()
                self.train_all(study, splits)
                status = self.wait_for(helpers)
                lost = queue.lost_slots(study)
                result = self.summarise(study, splits, final_model=not lost)
                status = self.report_lost(lost) or status
            except KeyboardInterrupt:
                workers.interrupt(helpers)
                self.report_interrupted(study)
                raise SystemExit(130)
            except BaseException:
                workers.interrupt(helpers)
                raise
        tracking.end_dead_runs(study_cfg.experiment, self.config.timing.grace_seconds)
        result["seconds"] = {name: round(value, 2) for name, value in self.timer.seconds.items()}
        self.say("time: " + ", ".join(f"{name} {value:.1f} s" for name, value in result["seconds"].items()))
        if self.options.as_json:
            print(json_dumps(result))
        return status

    # ------------------------------------------------------------------ the leader's helpers

    def start_helpers(self):
        """Start ``n_workers - 1`` helpers once the study exists; returns their Popen objects."""
        n_workers = self.options.n_workers
        if n_workers <= 1:
            return []
        payload = {"parent_pid": os.getpid(), "parent_run_id": self.parent.run_id, "as_json": self.options.as_json,
                   "config": {section: dataclasses.asdict(getattr(self.config, section)) for section in SECTIONS}}
        helpers = workers.spawn(self.config.study.kind, self.options.argv, n_workers - 1, payload,
                                self.options.environ)
        self.say(f"{n_workers} workers: this process and pid {', '.join(str(h.pid) for h in helpers)}")
        return helpers

    def wait_for(self, helpers):
        """Wait for the helpers; returns the exit status of the first that failed, else 0."""
        status = 0
        for helper in helpers:
            helper.wait()
            if helper.returncode != 0:
                status = status or workers.exit_status(helper.returncode)
                print(f"worker pid {helper.pid} ended with status {workers.exit_status(helper.returncode)}; "
                      f"its unfinished trials were run again", file=sys.stderr)
        return status

    def retry_lost(self):
        """Give the points lost in an earlier run (their workers died too often) their tries anew."""
        for lost in self.shared.retry_lost():
            self.say(f"point {lost.point} ({point_settings(lost.params)}), given up after {lost.deaths} deaths of "
                     f"its workers, is tried again")

    def report_lost(self, lost):
        """One line per point given up after its workers died too often; the exit status, 1 if any."""
        for slot in lost:
            print(f"error: point {slot.point} ({point_settings(slot.params)}) was given up: its workers died "
                  f"{slot.deaths} times (last: {slot.last.user_attrs.get('reason') or 'silent too long'}); to try it "
                  f"again, run the same command again: {redact(self.options.command) or 'the same command'}",
                  file=sys.stderr)
        return 1 if lost else 0

    def report_interrupted(self, study):
        study_cfg = self.config.study
        done = len(queue.finished_trials(study))
        print(f"\ninterrupted: study {study_cfg.name!r} has {done} of {study_cfg.total_trials} trials finished, "
              f"kept in {redact(self.url)}", file=sys.stderr)
        print(f"to resume it, run the same command again: {redact(self.options.command) or 'the same command'}",
              file=sys.stderr)

    # ------------------------------------------------------------------ claim, train, tell and log

    def train_all(self, study, splits):
        """Claim and train populations until no trial is left; wait while other workers finish theirs.

        Trials of dead workers are failed and enqueued again before each
        claim. The study is over when one look at it under its lock finds no
        trial waiting or running, and the race adds no round after that look
        (:meth:`study_over`).
        """
        waiting_said = False
        while True:
            self.stored(self.shared.recover)
            if self.claim_and_train(study, splits):
                waiting_said = False
                continue
            states = self.stored(self.shared.states)
            if any(state == TrialState.WAITING for _, state in states):
                continue  # enqueued since the claim, e.g. the copy of a trial another machine found dead
            running = sum(1 for _, state in states if state == TrialState.RUNNING)
            if not running:
                if self.study_over(states):
                    return  # the runs of the last population are finished in summarise
                continue
            with self.timer.timed("tracking"):
                self.parent.finish_runs()
            if not waiting_said:
                self.say(f"waiting for {running} trial(s) running in other workers")
                waiting_said = True
            time.sleep(min(1.0, self.config.timing.heartbeat_seconds))

    def study_over(self, states):
        """Whether the study, whose trials were ``states`` (none live) at one moment under the lock, is over: the
        race adds no round (race.advance) and no trial changed since. States only move forward and trials
        are only added, so an unchanged study was the same when the race judged it."""
        if race.advance(self.shared, self.config):
            return False
        return self.stored(self.shared.states) == states

    def claim_and_train(self, study, splits):
        """Claim a population, train it and tell it; False when there was nothing to claim.

        From the claim to the tell the trials beat, and on any exception
        (Ctrl-C included) those not recorded yet are given back, with the
        reason of the exception (:func:`queue.give_back_reason`): a Ctrl-C
        during the claim waits for it to end.
        """
        trials, heartbeat = [], None
        try:
            with workers.deferred_interrupt():
                trials = self.stored(lambda: self.shared.claim(self.config))
                if trials:
                    heartbeat = self.shared.heartbeat(trials).start()
            if not trials:
                return False
            with self.timer.timed("tracking"):
                self.parent.finish_runs()  # the runs of the population before, their matrices drawn meanwhile
            self.train_and_tell(study, trials, splits)
            return True
        except BaseException as error:
            if trials:
                self.give_back(trials, error)
            raise
        finally:
            if heartbeat is not None:
                heartbeat.stop()

    def give_back(self, trials, error):
        """Give ``trials`` back on ``error``; an error of the storage becomes one line and exit 1, a full disk is
        raised again for the command to say in one line."""
        if not queue.infrastructure(error):
            self.shared.give_back(trials, queue.give_back_reason(error))
            return
        numbers = ", ".join(str(t.number) for t in trials)
        try:
            self.shared.give_back(trials, queue.give_back_reason(error))
            fate = f"trial(s) {numbers} were given back, not counted as deaths of their points"
        except Exception:
            fate = (f"trial(s) {numbers} could not be given back and wait for another worker to take them over "
                    f"({self.config.timing.grace_seconds:g} s)")
        if full_disk(error) is not None:
            raise error  # the command's one line of a full disk (outages.disk_full_in_one_line) names the folder
        raise SystemExit(f"error: {infrastructure_problem(error, self.url)}; {fate}; "
                         f"fix it, then run the same command again") from error

    def stored(self, call):
        """``call()`` of the storage, tried again while the server is out of reach (:mod:`clrsearch.outages`):
        a claim or a tell cut short is made again once the storage is back."""
        return self.shared.patience.ride_out(call, f"the storage {self.url}")

    def threads(self):
        """The threads training may use now: this process's share of the cores, counted again when due."""
        self.cores.check_if_due()
        return self.cores.threads

    def train_and_tell(self, study, trials, splits):
        """Train one population, record it in the study, then in MLflow."""
        study_cfg = self.config.study
        round_ = max(t.user_attrs.get(queue.ROUND, 1) for t in trials)
        if round_ > 1:
            label = f"race round {round_}: {len(trials)} points"
        else:
            done, total = len(queue.finished_trials(study)), study_cfg.total_trials
            label = (f"trials {done + 1}-{done + len(trials)} of {total}" if len(trials) > 1
                     else f"trial {done + 1} of {total}")
        best = summary.best_row(summary.trials_table(study, study_cfg.alpha))
        steps = total_steps(trials, self.config, splits.n_train)
        with self.progress(steps, "step", self.quiet, label) as bar:
            if bar is not None and best is not None:
                bar.set_postfix_str(f"best {100 * best['mean_val_accuracy']:.2f}% at lambda {best['lam']:.3g}")
            outcome = train_population(self.shared, trials, self.config, splits, progress=bar, timer=self.timer,
                                       threads=self.threads)
            self.parent.draw_ahead(summary.trial_records(outcome, self.config, splits))  # while the study records
            outcome.results = self.stored(lambda: tell(self.shared, outcome, study_cfg.alpha))
        self.shared.spare([r.number for r in outcome.results if not r.recorded])
        with self.timer.timed("tracking"):
            self.parent.log_trials(summary.trial_records(outcome, self.config, splits))
        for result in outcome.results:
            if not result.recorded:
                self.say(f"trial {result.number}: lambda {result.lam:.4g}  taken over by another worker")
            else:
                settings = "  ".join(f"{k} {v:.4g}" if k == "lam" else f"{k} {v}" for k, v in result.params.items())
                self.say(f"trial {result.number}: {settings.replace('lam ', 'lambda ', 1)}  val accuracy "
                         f"{100 * result.mean:.2f} ± {100 * result.std:.2f} % ({len(result.replicates)})  "
                         f"{result.state}")

    # ------------------------------------------------------------------ summary and final model

    def summarise(self, study, splits, final_model=True):
        """The table of a finished study, its figures in MLflow, and the final model of a fine study (unless
        ``final_model`` is False: a point of the grid was given up)."""
        study_cfg = self.config.study
        summary.log_lost_trials(study, self.config, self.parent, splits.n_train)
        rows = summary.trials_table(study, study_cfg.alpha)
        compute = summary.compute_used(study, self.config, splits.n_train)
        notes = summary.notes(study, rows, compute, study_cfg)
        self.say("\n".join([summary.format_table(rows), *notes]))
        with queue.study_lock(self.url):
            study.set_user_attr("verdicts", summary.verdicts(rows))
        with self.timer.timed("tracking"):
            self.parent.finish_runs()  # its drawings done before the figures are built (Optuna restyles pyplot)
            self.parent.log_summary(rows, summary.study_figures(study, rows, study_cfg.kind),
                                    summary.markdown_table(rows, f"{study_cfg.kind} study {study_cfg.name!r}", notes))
            self.parent.log_metrics(summary.study_metrics(rows, compute))
            self.parent.mark_trials(summary.verdicts(rows))
            self.parent.finish_runs()
        result = {"study": study_cfg.name, "kind": study_cfg.kind, "storage": redact(self.url),
                  "trials": rows, "best": summary.best_row(rows), "mlflow_run_id": self.parent.run_id}
        if study_cfg.kind == "fine" and study_cfg.final and final_model:
            result["final"] = self.final_model(result["best"], splits)
        self.timer.seconds["total"] = time.perf_counter() - self.started
        self.parent.log_metrics({f"seconds_{name}": value for name, value in self.timer.seconds.items()})
        return result

    def final_model(self, best, splits):
        """Train the final model at the best point, test it, log it and register it."""
        final.check_best(best)
        params = {name: best[name] for name in self.config.study.grid_dimensions if name in best}
        final_splits = final.load_final_splits(self.config, splits)
        train = final.final_train_config(self.config, params, final_splits.train.n)
        self.say(f"final model: {point_settings(params)}; {self.config.study.final_seeds} networks "
                 f"on {final_splits.train.n} images, {train.cycles} cycles of 2 x {train.n_s} steps")
        with self.timer.timed("final model"), \
                self.progress(train.total_steps, "step", self.quiet, "final model") as bar:
            trained = final.train_final(self.config, params, final_splits, progress=bar, threads=self.threads)
        with self.timer.timed("tracking"):
            run_id, version = final.log_final(trained, self.config, final_splits, self.parent.run_id)
        members = np.array(trained.member_test_accuracies)
        self.say(f"final model: test {100 * trained.test_accuracy:.2f}% (ensemble of {len(members)}), members "
                 f"{100 * members.mean():.2f} ± {100 * members.std():.2f} %, snapshot ensemble "
                 f"{100 * trained.snapshot_accuracy:.2f}%; validation {100 * trained.val_accuracy:.2f}%, "
                 f"train {100 * trained.train_accuracy:.2f}%")
        settled = tracking.version_settled(version)
        self.say(f"registered as models:/{tracking.REGISTERED_NAME}/{version} (alias {settled.alias or 'none'}: "
                 f"{settled.reason}), run {run_id}")
        return {**params, "train_accuracy": trained.train_accuracy, "val_accuracy": trained.val_accuracy,
                "test_accuracy": trained.test_accuracy, "member_test_accuracies": trained.member_test_accuracies,
                "snapshot_ensemble_test_accuracy": trained.snapshot_accuracy, "model_version": version,
                "alias": settled.alias, "alias_reason": settled.reason, "run_id": run_id}

    # ------------------------------------------------------------------ before the study

    def range_test_etas(self, splits):
        """The bounds named in ``options.auto_eta`` as an LR range test suggests them, e.g. {"eta_max": 0.05}."""
        config = self.request
        with self.progress(None, "step", self.quiet, "LR range test") as bar:
            result = run_range_test(splits.block(0) if uses_folds(config) else splits, config.train, RangeTest(),
                                    progress=bar)
        tracking.log_range_test(result, RangeTest(), config.data, config.train, config.study.experiment,
                                self.inputs)
        suggested = {"eta_min": result.eta_min, "eta_max": result.eta_max}
        etas = {name: float(f"{suggested[name]:.3g}") for name in sorted(self.options.auto_eta)}
        self.say("LR range test: " + ", ".join(f"{name} = {value:g}" for name, value in etas.items()))
        with_etas(config, etas)  # refused here, before the study exists, when a bound does not fit the other
        return etas


def point_settings(params):
    """A point's settings as people read them, e.g. "lambda 0.0011, n_s_epochs 4"."""
    return ", ".join(f"lambda {v:.4g}" if k == "lam" else f"{k} {v}" for k, v in params.items())


def infrastructure_problem(error, url):
    """What went wrong with the disk or the storage, in a few words without a password."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return f"no space left on the device{f' of {error.filename}' if error.filename else ''}"
    if not isinstance(error, OSError):
        return f"the storage {redact(url)} failed: {redact(first_line(error))}"
    return redact(first_line(error))


def resolved_config(config, etas, study_storage, n_workers):
    """``config`` as a study runs it: the learning-rate bounds ``etas`` of an LR range test, the fine grid
    resolved from the coarse study in ``study_storage``, and populations cut for ``n_workers`` workers."""
    return per_worker(resolve_grid(with_etas(config, etas), study_storage), n_workers)


def uses_folds(config):
    """Whether the study's replicates are blocks over validation folds: protocol ``blocks`` on split ``full``
    (on ``batch1`` there is one split, and ``blocks`` is ``paired``)."""
    return config.study.replicates == "blocks" and config.data.split == "full"


def with_etas(config, etas):
    """``config`` with the learning-rate bounds in ``etas`` (e.g. {"eta_min": 1e-4}) in its train section."""
    try:
        return replace(config, train=replace(config.train, **etas))
    except UsageError as error:
        raise UsageError(f"the LR range test suggested {etas}, which does not fit the other bound: "
                         f"{error}") from None


def per_worker(config, n_workers):
    """``config`` with at most ceil(total / n_workers) trials per population, so that every worker gets some."""
    limit = min(config.study.trials_per_population, math.ceil(config.study.total_trials / n_workers))
    return replace(config, study=replace(config.study, trials_per_population=limit))


def json_dumps(result):
    """The summary as one line of strict JSON: NumPy scalars as numbers, NaN and infinities as null."""
    return json.dumps(_finite(result), default=_json_default, allow_nan=False)


def _finite(value):
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, np.integer):
        return value.item()
    return str(value)
