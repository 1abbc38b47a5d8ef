"""The Optuna study of a coarse or fine lambda search: created or loaded, its sampler and points.

A trial is one lambda; its value is the mean validation accuracy of
``n_seeds`` networks trained from different initial weights on the same
mini-batch order.

- coarse, ``random`` sampler: the first ``n_trials`` draws of a seeded
  log-uniform ``RandomSampler`` over [lam_min, lam_max] are enqueued up front
  (draw k always lands in slot k), so resumed and distributed studies try
  exactly the lambdas an uninterrupted run would;
- coarse, ``tpe`` sampler: trials are asked population by population;
- fine, ``grid`` sampler: the grid points are enqueued up front. A grid given
  as ``--grid`` is used as is; otherwise it is derived from the coarse study
  (see :func:`derive_grid`) and resolved into the config once, by
  :func:`resolve_grid`.

Workers claim enqueued trials atomically (:mod:`.queue`), so with several
workers every point is evaluated once. Pruning is decided by :mod:`.pruning`,
never by an Optuna pruner.
"""

from dataclasses import replace

import optuna
from optuna.trial import TrialState

from ..config import SearchConfig, TrainConfig
from ..errors import UsageError
from . import queue
from .compare import PAIRED_TEST
from .queue import NEW_REPLICATES, POINT, ROUND

LAM = "lam"  # the name of lambda in Optuna
# User attrs of a told trial: every replicate of its point so far and their final validation accuracies.
REPLICATES, ACCURACIES = "replicates", "val_accuracies"
RACE_LEFT = "race_left"  # study user attr: point -> the round after which the race left it behind


def create_or_load(config: SearchConfig, study_storage):
    """The study of ``config`` (its grid resolved), created and filled with its first round of points if needed.

    Call it under :func:`queue.study_lock`, with ``study_storage`` opened there by
    :func:`queue.open_storage` (which creates Optuna's tables in a new storage), so that
    commands and workers started together create the storage and the study once.

    Optuna writes a study and each of its user attrs in a commit of its own, so a process
    killed while it creates one may leave a study with part of its identity and no trial
    (none is enqueued before the identity is whole). Under the lock no other process is
    creating it, so such a study is one whose creation was cut short: the identity it has
    must be this config's, the rest is written now (:func:`_check_same_study`).
    """
    study_cfg = config.study
    try:
        study = optuna.create_study(study_name=study_cfg.name, storage=study_storage, direction="maximize",
                                    sampler=make_sampler(config), pruner=optuna.pruners.NopPruner(),
                                    load_if_exists=True)
    except optuna.exceptions.OptunaError as error:
        raise UsageError(f"cannot open study {study_cfg.name!r}: {error}") from None
    _check_same_study(study, config)
    for key, value in {**study_identity(config), "paired_test": PAIRED_TEST, "alpha": study_cfg.alpha}.items():
        if key not in study.user_attrs:  # a new study, or one whose creation was cut short
            study.set_user_attr(key, value)
    if study_cfg.sampler in ("random", "grid"):
        queue.enqueue_missing(study, first_round(study_cfg))
    return study


def study_identity(config):
    """What a study resumed under the same name must keep: kind, sampler, replicates, protocol, grid."""
    study_cfg = config.study
    identity = {"kind": study_cfg.kind, "sampler": study_cfg.sampler, "seeds": list(study_cfg.seeds),
                "protocol": protocol_params(config)}
    if study_cfg.grid:
        identity["grid"] = [[name, list(values)] for name, values in study_cfg.grid]
    return identity


def _check_same_study(study, config):
    """Refuse ``study`` unless its identity is ``config``'s; a key it lacks is refused only when it has trials
    (a study made by another version), else left to be written (a creation cut short)."""
    attrs = study.user_attrs
    created = bool(study.get_trials(deepcopy=False))
    for key, value in study_identity(config).items():
        if (key in attrs or created) and attrs.get(key) != value:
            raise UsageError(f"study {study.study_name!r} already exists with another {key} "
                             f"({attrs.get(key)!r}, not {value!r}); pick a new --study-name or the same settings")


def first_round(study_cfg):
    """slot -> (params, user attrs) of the points enqueued up front: the planned lambdas, or the grid."""
    points = ([{LAM: lam} for lam in planned_lambdas(study_cfg)] if study_cfg.sampler == "random"
              else study_cfg.points)
    replicates = list(range(study_cfg.n_seeds))
    return {slot: (params, {POINT: slot, ROUND: 1, NEW_REPLICATES: replicates}) for slot, params in enumerate(points)}


def make_sampler(config):
    study_cfg = config.study
    if study_cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=study_cfg.seed, constant_liar=True)
    if study_cfg.sampler == "grid":
        return optuna.samplers.GridSampler({name: list(values) for name, values in study_cfg.grid},
                                           seed=study_cfg.seed)
    return optuna.samplers.RandomSampler(seed=study_cfg.seed)


def suggest_params(trial, study_cfg):
    """The point of a trial: lambda log-uniform for the coarse study; every grid dimension for the fine one."""
    if study_cfg.kind != "fine":
        return {LAM: trial.suggest_float(LAM, study_cfg.lam_min, study_cfg.lam_max, log=True)}
    params = {}
    for name, values in study_cfg.grid:
        if name == LAM:
            params[name] = trial.suggest_float(name, min(values), max(values))
        elif name == "augment":
            params[name] = trial.suggest_categorical(name, list(values))
        else:
            params[name] = trial.suggest_int(name, min(values), max(values))
    return params


def point_train_config(train: TrainConfig, params, n_train):
    """The training protocol of a point: ``train`` with the point's schedule dimensions applied.

    ``n_s_epochs`` k means n_s = k * floor(n_train / n_batch) update steps.
    """
    changes = {name: params[name] for name in ("n_s", "cycles", "augment") if name in params}
    if "n_s_epochs" in params:
        changes["n_s"] = int(params["n_s_epochs"]) * (n_train // train.n_batch)
    return replace(train, **changes) if changes else train


def lam_distribution(study_cfg):
    return optuna.distributions.FloatDistribution(study_cfg.lam_min, study_cfg.lam_max, log=True)


def planned_lambdas(study_cfg):
    """The first ``n_trials`` lambdas a seeded RandomSampler draws, log-uniform in [lam_min, lam_max].

    Draw k does not depend on ``n_trials``, so raising it extends the list.
    """
    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=study_cfg.seed))
    distribution = lam_distribution(study_cfg)
    return [scratch.ask({LAM: distribution}).params[LAM] for _ in range(study_cfg.n_trials)]


def replicate_accuracies(frozen):
    """replicate -> final validation accuracy of a told trial."""
    return dict(zip(frozen.user_attrs.get(REPLICATES, []), frozen.user_attrs.get(ACCURACIES, [])))


def latest_trials(trials, before_round=None):
    """point -> the trial of the point's latest round among ``trials``, of a round before ``before_round`` if given.

    A point has one slot per round, hence at most one finished trial per round.
    """
    latest = {}
    for t in trials:
        point, round_ = t.user_attrs.get(POINT, t.number), t.user_attrs.get(ROUND, 1)
        if before_round is not None and round_ >= before_round:
            continue
        if point not in latest or round_ > latest[point].user_attrs.get(ROUND, 1):
            latest[point] = t
    return latest


def derive_grid(coarse, points):
    """A linear grid of ``points`` lambdas from the best coarse trials.

    Rule: take the three best completed coarse trials by mean validation
    accuracy; the grid runs linearly from 0 to twice the largest of their
    lambdas, rounded to two significant digits (the original study: best
    coarse values near 1e-3 gave the grid 0, 0.001, ..., 0.007).
    """
    done = [t for t in coarse.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not done:
        raise UsageError(f"coarse study {coarse.study_name!r} has no completed trials; run "
                         f"python -m clrsearch.coarse first, or give the grid with --grid 0,0.001,0.002")
    best = sorted(done, key=lambda t: t.value, reverse=True)[:3]
    top = 2 * max(t.params[LAM] for t in best)
    step = float(f"{top / (points - 1):.2g}") if points > 1 else top
    return tuple(round(i * step, 12) for i in range(points))


def protocol_params(config):
    """What makes two trials comparable: data, training protocol, seeds."""
    d, t = config.data, config.train
    return {"split": d.split, "val_size": d.val_size, "split_seed": d.split_seed, "n_train": d.n_train,
            "n_batch": t.n_batch, "cycles": t.cycles, "n_s": t.n_s, "eta_min": t.eta_min, "eta_max": t.eta_max,
            "clr_mode": t.clr_mode, "gamma": t.gamma, "hidden": t.hidden, "dtype": t.dtype,
            "shuffle_seed": t.shuffle_seed, "augment": t.augment, "replicates": config.study.replicates}


def resolve_grid(config: SearchConfig, study_storage) -> SearchConfig:
    """``config`` with the fine grid resolved: the grid given, sorted, else the study's own, else one
    derived from the coarse study. A coarse config is returned as it is.
    """
    if config.study.kind != "fine":
        return config
    return replace(config, study=replace(config.study, grid=_fine_grid(config, study_storage)))


def _fine_grid(config, study_storage):
    """The grid's dimensions, each sorted; lambda from the study's own grid or the coarse study when not given."""
    given = {name: tuple(sorted(values)) for name, values in config.study.grid}
    if LAM in given:
        return tuple(given.items())
    try:
        existing = optuna.load_study(study_name=config.study.name, storage=study_storage)
    except KeyError:
        existing = None
    stored = dict((name, tuple(values)) for name, values in (existing.user_attrs.get("grid") or [])) if existing else {}
    if LAM in stored:
        return ((LAM, stored[LAM]), *given.items())
    try:
        coarse = optuna.load_study(study_name=config.study.coarse_study, storage=study_storage)
    except KeyError:
        raise UsageError(f"no coarse study {config.study.coarse_study!r} in the storage to derive the grid from; "
                         f"run python -m clrsearch.coarse first, or give --grid 0,0.001,0.002") from None
    return ((LAM, derive_grid(coarse, config.study.grid_points)), *given.items())
