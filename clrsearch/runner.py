"""Run a coarse or fine study end to end: data, trials, tracking, summary, final model.

``python -m clrsearch.coarse`` and ``python -m clrsearch.fine`` are thin
wrappers around :func:`main`.
"""

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from datetime import datetime

import numpy as np

from . import cli, plots, search, storage, tracking, workers
from .config import DEFAULT_SEARCH
from .errors import UsageError
from .settings import apply_overrides, flat_params, load_search_config, search_parser, take_auto_eta


def main(kind, argv=None, description=None):
    """Parse the flags of ``kind`` ("coarse" or "fine"), run the study, print its summary."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = search_parser(kind, description or __doc__).parse_args(argv)
    helper = workers.helper_payload()
    if helper is not None:
        config = apply_overrides(DEFAULT_SEARCH[kind], helper["config"], source=f"${workers.HELPER_ENV}")
        try:
            return run(config, quiet=True, as_json=helper["as_json"], helper=helper)
        except KeyboardInterrupt:  # the parent stopped before this helper claimed a trial
            raise SystemExit(130)
    auto_eta = take_auto_eta(args)
    config = load_search_config(kind, args)
    command = shlex.join(["python", "-m", f"clrsearch.{kind}", *argv])
    try:
        return run(config, quiet=args.quiet or args.json, as_json=args.json, auto_eta=auto_eta,
                   n_workers=args.workers, argv=argv, command=command)
    except KeyboardInterrupt:  # before any trial ran: the study, if created, resumes from its queue
        print(f"\ninterrupted before any trial ran; to start the study, run the same command again: {command}",
              file=sys.stderr)
        raise SystemExit(130)


def run(config, quiet=False, as_json=False, auto_eta=(), n_workers=1, argv=(), command=None, helper=None):
    """Run the study of ``config``; returns the exit status.

    ``auto_eta`` names the learning-rate bounds ("eta_min", "eta_max") to take
    from an LR range test run on the study's data before the trials.
    ``n_workers`` > 1 starts that many - 1 helper processes running ``argv``
    once the study is prepared. ``helper`` is what a helper got from its
    parent (see :mod:`clrsearch.workers`): it trains trials, prints a line per
    trial, and leaves the summary to its parent.

    Everything that can be refused (flags, TOML, the storage URL, the tracking
    store, the data) is checked before the study or any MLflow run exists.
    """
    from .data import load_splits

    started = time.perf_counter()
    timer = search.Timer()
    study_cfg = config.study
    say = (lambda *a: None) if as_json else print
    url = storage.storage_url(study_cfg.storage)
    workers.grace_seconds()  # checks the timing variables
    if helper is not None:
        workers.die_with_parent(helper["parent_pid"])
    d = config.data
    splits = load_splits(d.split, d.data_dir, val_size=d.val_size, split_seed=d.split_seed, n_train=d.n_train,
                         dtype=np.dtype(config.train.dtype), download=d.data_dir is None)
    if config.train.n_batch > splits.train.n:
        raise UsageError(f"n_batch ({config.train.n_batch}) is larger than the training set ({splits.train.n} images)")
    timer.add("data", time.perf_counter() - started)
    if helper is None:
        tracking.check_store(study_cfg.experiment)
        blas_threads = max(1, workers.cpus() // n_workers) if n_workers > 1 else None
    else:
        blas_threads = helper["blas_threads"]
    if auto_eta:
        config = with_range_test_etas(config, splits, auto_eta, quiet, say)

    with workers.sigterm_as_interrupt(), workers.blas_threads(blas_threads):
        with storage.study_lock(url):
            study_storage = storage.open_storage(url)
            grid = fine_grid(config, study_storage) if study_cfg.kind == "fine" else None
            study = search.create_or_load(config, study_storage, grid)
        total = len(grid) if grid else study_cfg.n_trials
        config = per_worker(config, total, n_workers)
        if helper is not None:
            with tracking.StudyRun(study_cfg.experiment, tags={"study_name": study_cfg.name},
                                   run_id=helper["parent_run_id"]) as parent:
                try:
                    run_trials(study, config, splits, parent, grid, timer, quiet=True, say=say)
                except KeyboardInterrupt:
                    raise SystemExit(130)
            return 0
        return run_study(study, config, splits, grid, url, timer, started, quiet, as_json, say, n_workers,
                         argv, command)


def run_study(study, config, splits, grid, url, timer, started, quiet, as_json, say, n_workers, argv, command):
    """The parent process of a study: its MLflow run, the helpers, the trials, the summary, the final model."""
    study_cfg = config.study
    tracking.end_dead_runs(study_cfg.experiment)
    tags = {"study_name": study_cfg.name, "kind": study_cfg.kind, "sampler": study_cfg.sampler,
            "storage": storage.redact(url), "git_commit": tracking.git_commit(), "workers": n_workers}
    params = flat_params(config)
    if grid:
        params["study.grid"] = ",".join(f"{g:g}" for g in grid)
    total = len(grid) if grid else study_cfg.n_trials
    status = 0
    with tracking.StudyRun(study_cfg.experiment, f"{study_cfg.kind}:{study_cfg.name}", params, tags) as parent:
        helpers = []
        try:
            if n_workers > 1:
                resolved = dataclasses.replace(config, study=dataclasses.replace(study_cfg, grid=tuple(grid or ())))
                payload = {"parent_pid": os.getpid(), "parent_run_id": parent.run_id, "as_json": as_json,
                           "config": dataclasses.asdict(resolved),
                           "blas_threads": max(1, workers.cpus() // n_workers)}
                helpers = workers.spawn(study_cfg.kind, argv, n_workers - 1, payload)
                say(f"{n_workers} workers: this process and pid {', '.join(str(h.pid) for h in helpers)}")
            run_trials(study, config, splits, parent, grid, timer, quiet, say)
            for helper in helpers:
                helper.wait()
                if helper.returncode != 0:
                    status = status or workers.exit_status(helper.returncode)
                    print(f"worker pid {helper.pid} ended with status {workers.exit_status(helper.returncode)}; "
                          f"its unfinished trials were run again", file=sys.stderr)
            summary = summarise(study, config, splits, grid, url, parent, timer, started, quiet, say)
        except KeyboardInterrupt:
            workers.interrupt(helpers)
            done = len(search.finished_trials(study))
            print(f"\ninterrupted: study {study_cfg.name!r} has {done} of {total} trials finished, kept in "
                  f"{storage.redact(url)}", file=sys.stderr)
            print(f"to resume it, run the same command again: {command or 'the same command'}", file=sys.stderr)
            raise SystemExit(130)
        except BaseException:
            workers.interrupt(helpers)
            raise
    tracking.end_dead_runs(study_cfg.experiment)
    summary["seconds"] = {name: round(value, 2) for name, value in timer.seconds.items()}
    say("time: " + ", ".join(f"{name} {value:.1f} s" for name, value in summary["seconds"].items()))
    if as_json:
        print(json.dumps(summary, default=_json_default))
    return status


def summarise(study, config, splits, grid, url, parent, timer, started, quiet, say):
    """The table of a finished study, its figures in MLflow, and the final model of a fine study."""
    study_cfg = config.study
    log_lost_trials(study, config, url, parent)
    rows = search.trials_table(study)
    say(search.format_table(rows, study_cfg.n_seeds))
    logging_started = time.perf_counter()
    parent.log_summary(rows, study_figures(study, rows, study_cfg.kind))
    timer.add("tracking", time.perf_counter() - logging_started)
    summary = {"study": study_cfg.name, "kind": study_cfg.kind, "storage": storage.redact(url),
               "trials": rows, "best": search.best_row(rows), "mlflow_run_id": parent.run_id}
    if study_cfg.kind == "fine" and study_cfg.final:
        summary["final"] = run_final(config, splits, summary["best"], parent, timer, quiet, say)
    timer.seconds["total"] = time.perf_counter() - started
    parent.log_metrics({f"seconds_{name}": value for name, value in timer.seconds.items()})
    return summary


def log_lost_trials(study, config, url, parent):
    """Log again, from the study, the finished trials whose MLflow runs died with the process writing them.

    Their curves are lost; the trial run gets the values Optuna holds and the
    tag curves=lost. A trial counts as lost when it has no trial run and the
    process that told it is dead (or silent for the grace period).
    """
    grace = workers.grace_seconds()
    with storage.study_lock(url):
        logged = tracking.logged_trials(config.study.experiment, config.study.name)
        lost = []
        for t in search.finished_trials(study):
            if t.number in logged:
                continue
            worker = t.system_attrs.get(storage.WORKER_ATTR)
            silent = (datetime.now() - (t.datetime_complete or datetime.now())).total_seconds() > grace
            if workers.alive(worker) is False or (workers.alive(worker) is None and silent):
                lost.append(t)
        parent.log_trials([lost_record(t, config) for t in lost])


def lost_record(frozen, config):
    """A TrialRecord, without seed runs, of a finished trial as the study holds it."""
    accuracies = frozen.user_attrs.get("val_accuracies", [])
    return tracking.TrialRecord(
        number=frozen.number, lam=frozen.params[search.LAM], state=frozen.state.name,
        mean=frozen.value if frozen.value is not None else float("nan"),
        std=frozen.user_attrs.get("val_accuracy_std", float("nan")), params=search.protocol_params(config),
        reason=frozen.user_attrs.get("reason", ""), tags={"curves": "lost"},
        seed_accuracies=dict(zip(config.study.seeds, accuracies)))


def per_worker(config, total, n_workers):
    """``config`` with at most ceil(total / n_workers) trials per population, so that every worker gets some."""
    limit = min(config.study.trials_per_population, math.ceil(total / n_workers))
    return dataclasses.replace(config, study=dataclasses.replace(config.study, trials_per_population=limit))


def run_trials(study, config, splits, parent, grid, timer, quiet, say):
    """Claim and train populations until no trial is left; wait while other workers finish theirs.

    Trials of dead workers are failed and enqueued again before each claim.
    On any exception (Ctrl-C included) the trials of the population in hand
    that are not recorded yet are given back.
    """
    study_cfg = config.study
    total = len(grid) if grid else study_cfg.n_trials
    waiting_said = False
    while True:
        storage.recover_dead_workers(study)
        trials = search.next_trials(study, config)
        if not trials:
            running = search.others_running(study)
            if not running:
                return
            if not waiting_said:
                say(f"waiting for {running} trial(s) running in other workers")
                waiting_said = True
            time.sleep(min(1.0, workers.heartbeat_seconds()))
            continue
        waiting_said = False
        try:
            train_and_tell(study, trials, config, splits, parent, grid, timer, quiet, say, total)
        except BaseException:
            storage.give_back(study, trials)
            raise


def train_and_tell(study, trials, config, splits, parent, grid, timer, quiet, say, total):
    """Train one population, record it in the study, then in MLflow."""
    study_cfg = config.study
    done = len(search.finished_trials(study))
    label = f"trials {done + 1}-{done + len(trials)} of {total}" if len(trials) > 1 else f"trial {done + 1} of {total}"
    best = search.best_row(search.trials_table(study))
    with storage.Heartbeat(study, trials), \
            cli.progress_bar(config.train.total_steps, "step", quiet, label) as bar:
        if bar is not None and best is not None:
            bar.set_postfix_str(f"best {100 * best['mean_val_accuracy']:.2f}% at lambda {best['lam']:.3g}")
        outcome = search.train_population(trials, config, splits, grid, progress=bar, timer=timer)
        summaries = search.tell(study, outcome, splits, study_cfg.n_seeds)
    logging_started = time.perf_counter()
    parent.log_trials(trial_records(outcome, summaries, config, splits))
    timer.add("tracking", time.perf_counter() - logging_started)
    for trial, lam, state, summary in zip(trials, outcome.lams, outcome.states, summaries):
        if summary is None:
            say(f"trial {trial.number}: lambda {lam:.4g}  taken over by another worker")
        else:
            say(f"trial {trial.number}: lambda {lam:.4g}  val accuracy {100 * summary[0]:.2f} ± "
                f"{100 * summary[1]:.2f} %  {state}")


def with_range_test_etas(config, splits, names, quiet, say):
    """``config`` with eta_min and/or eta_max replaced by an LR range test's suggestion."""
    from dataclasses import replace

    from . import lrrange

    with cli.progress_bar(None, "step", quiet, "LR range test") as bar:
        result = lrrange.run_range_test(splits, config.train, progress=bar)
    test = lrrange.RangeTest()
    lrrange.log_to_mlflow(result, test, config.data, config.train, config.study.experiment)
    suggested = {"eta_min": result.eta_min, "eta_max": result.eta_max}
    etas = {name: float(f"{suggested[name]:.3g}") for name in names}
    say("LR range test: " + ", ".join(f"{name} = {value:g}" for name, value in etas.items()))
    try:
        return replace(config, train=replace(config.train, **etas))
    except UsageError as error:
        raise UsageError(f"the LR range test suggested {etas}, which does not fit the other bound: {error}") from None


def trial_records(outcome, summaries, config, splits):
    """What the tracking layer logs for the trials of one population."""
    n_seeds = config.study.n_seeds
    protocol = search.protocol_params(config)
    records = []
    for i, trial in enumerate(outcome.trials):
        if summaries[i] is None:
            continue
        seeds = []
        for j, seed in enumerate(config.study.seeds):
            m = i * n_seeds + j
            seeds.append(tracking.SeedRecord(
                seed=seed, val_accuracy=summaries[i][2][j], history=outcome.result.history, member=m,
                val_true=splits.val.y, val_pred=outcome.val_pred[m], class_names=splits.label_names,
                status=outcome.result.status[m]))
        mean, std, _ = summaries[i]
        records.append(tracking.TrialRecord(number=trial.number, lam=outcome.lams[i], state=outcome.states[i],
                                            mean=mean, std=std, seeds=seeds, params=protocol,
                                            reason=outcome.reasons[i]))
    return records


def fine_grid(config, study_storage):
    """The grid given in the config, else one derived from the coarse study."""
    import optuna

    if config.study.grid:
        return tuple(sorted(config.study.grid))
    try:
        existing = optuna.load_study(study_name=config.study.name, storage=study_storage)
    except KeyError:
        existing = None
    if existing is not None and existing.user_attrs.get("grid"):
        return tuple(existing.user_attrs["grid"])
    try:
        coarse = optuna.load_study(study_name=config.study.coarse_study, storage=study_storage)
    except KeyError:
        raise UsageError(f"no coarse study {config.study.coarse_study!r} in the storage to derive the grid from; "
                         f"run python -m clrsearch.coarse first, or give --grid 0,0.001,0.002") from None
    grid = search.derive_grid(coarse, config.study.grid_points)
    return grid


def study_figures(study, rows, kind):
    """Figures logged on the parent run."""
    figures = {}
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if complete:
        figures["lambda_search"] = plots.lambda_search(
            [r["lam"] for r in complete], [r["mean_val_accuracy"] for r in complete],
            [r["std_val_accuracy"] for r in complete], log_x=kind == "coarse",
            title=f"{kind} search: mean validation accuracy ± 3σ")
        figures.update(plots.optuna_figures(study))
    return figures


def run_final(config, splits, best, parent, timer, quiet, say):
    """Train the final model at the best lambda, test it, log it and register it."""
    from .data import load_batch
    from .experiment import run as run_experiment
    from . import network

    if best is None:
        raise UsageError("the fine study has no completed trial to pick lambda from")
    experiment = search.final_experiment(config, best["lam"])
    say(f"final model: lambda {best['lam']:.4g}, {experiment.train.cycles} cycles of 2 x {experiment.train.n_s} steps")
    started = time.perf_counter()
    with cli.progress_bar(experiment.train.total_steps, "step", quiet, "final model") as bar:
        outcome = run_experiment(experiment, splits, progress=bar)
    timer.add("final model", time.perf_counter() - started)
    snapshots = [network.member(p, 0) for p in outcome.result.snapshots]
    ensemble_pred = ensemble_predict(snapshots, splits.test.X)
    ensemble_accuracy = float(np.mean(ensemble_pred == splits.test.y))
    use_ensemble = config.study.ensemble
    networks = snapshots if use_ensemble else [network.member(outcome.result.params, 0)]
    test_pred = ensemble_pred if use_ensemble else outcome.test_predictions
    test_accuracy = ensemble_accuracy if use_ensemble else outcome.test_accuracy
    raw_test, _ = load_batch(splits.data_dir / "test_batch")

    logging_started = time.perf_counter()
    run_id, version = tracking.log_final_model(
        experiment=config.study.experiment, run_name=f"final:{config.study.name}",
        params={"lam": best["lam"], "cycles": experiment.train.cycles, "n_s": experiment.train.n_s,
                "n_batch": experiment.train.n_batch, "eta_min": experiment.train.eta_min,
                "eta_max": experiment.train.eta_max, "clr_mode": experiment.train.clr_mode,
                "seed": experiment.seed, "split": experiment.data.split, "val_size": experiment.data.val_size,
                "ensemble": use_ensemble, "dtype": experiment.train.dtype},
        history=outcome.result.history, member=0, val_accuracy=outcome.val_accuracy,
        test_accuracy=test_accuracy, test_true=splits.test.y, test_pred=test_pred,
        class_names=splits.label_names, networks=networks, normaliser=splits.normaliser,
        dtype=experiment.train.dtype, input_example=raw_test[:5], parent_run_id=parent.run_id,
        extra_metrics={"train_accuracy": outcome.train_accuracy, "final_network_test_accuracy": outcome.test_accuracy,
                       "snapshot_ensemble_test_accuracy": ensemble_accuracy},
        figures={"learning_curves": plots.learning_curves(outcome.result.history, x="step",
                                                          title=f"final model, lambda = {best['lam']:.4g}"),
                 "eta": plots.eta_curve(outcome.result.history.eta)})
    timer.add("tracking", time.perf_counter() - logging_started)
    say(f"final model: train {100 * outcome.train_accuracy:.2f}%, validation {100 * outcome.val_accuracy:.2f}%, "
        f"test {100 * outcome.test_accuracy:.2f}% (snapshot ensemble of {len(snapshots)}: "
        f"{100 * ensemble_accuracy:.2f}%)")
    say(f"registered as models:/{tracking.REGISTERED_NAME}/{version} (alias champion), run {run_id}")
    return {"lam": best["lam"], "train_accuracy": outcome.train_accuracy, "val_accuracy": outcome.val_accuracy,
            "test_accuracy": outcome.test_accuracy, "ensemble_test_accuracy": ensemble_accuracy,
            "registered_test_accuracy": test_accuracy, "model_version": version, "run_id": run_id}


def ensemble_predict(networks, X):
    """Labels (N,) from the class probabilities averaged over ``networks``."""
    from . import network

    P = sum(network.forward(p, X) for p in networks) / len(networks)  # (C, N)
    return np.argmax(P, axis=0)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
