"""Racing in the fine study: more replicates for the points still in the race, round by round.

Round 1 trains ``n_seeds`` replicates of every grid point. After each round
the rule ``race_rule`` decides which points go on (:func:`next_step`); they
get ``race_seeds`` more replicates in the next round, trained as one
population per replicate. The study's user attr ``race_left`` records, per
point, the round after which it left, and ``race_end`` why and when the race
stopped.

- ``kn`` (the default): Kim & Nelson's screening (:func:`.decision.kn_screen`)
  at every replicate count r = n_seeds, n_seeds + 1, ... in turn, recomputed
  from the study's data; the race stops when one point survives, when every
  survivor is within ``delta`` of the best by MCB intervals
  (:func:`.decision.mcb`), or at ``max_seeds`` replicates.
- ``holm``: every point is compared with the empirical best on their common
  replicates (:mod:`.compare`); the points still ``tied`` with it, and the best
  itself, go on until the best stands alone or they reach ``max_seeds``.

A round's trials are ordinary trials of the queue (slot ``point + n_points *
(round - 1)``), so a round is as crash-safe as the first: a killed worker's
trials are trained again, finished ones never. The next round is decided from
what the study holds, under the study lock, by whichever worker finds the
round over, and the decision is written to the study (user attr
``race_rounds``: round -> points and replicates) in one write before its
trials are enqueued; a worker killed between two enqueues leaves the rest to
the next one, which enqueues what a decided round lacks before anything else.
Enqueueing is idempotent (a slot is enqueued once), so the race does not
depend on the number of workers or machines.

Among several points left at the end, the declared winner is the largest
mean validation accuracy over all their replicates
(:func:`.compare.best_key`).
"""

from dataclasses import dataclass

from optuna.trial import TrialState

from ..config import SearchConfig, StudyConfig
from . import decision, queue
from .compare import compare_to_best
from .queue import NEW_REPLICATES, POINT, ROUND
from .study import RACE_LEFT, latest_trials, replicate_accuracies

RACE_ROUNDS = "race_rounds"  # study user attr: round -> {"points": [...], "replicates": [...]}, once decided
RACE_END = "race_end"  # study user attr once the race stopped: {"rule", "reason", "round", "replicates", "points",
#                         "alpha", "delta"}

ONE_LEFT, WITHIN_DELTA, BUDGET = "one point left", "all within delta (MCB)", "replicate budget"


@dataclass(frozen=True)
class Step:
    """What the race does after a round: the points that go on, or why it stops (``end``, "" when it goes on)."""

    going_on: tuple  # points still in the race, sorted
    end: str  # "" | ONE_LEFT | WITHIN_DELTA | BUDGET


def next_step(accuracies, in_race, have, study_cfg: StudyConfig):
    """The race's decision after a round, a function of the data alone (the study and tools/replay.py use it).

    Parameters
    ----------
    accuracies : dict point -> dict replicate -> accuracy of every point with data (those that left included)
    in_race : the points that took part in the round just over
    have : int, replicates of the points in the round just over
    study_cfg : its ``race_rule``, ``alpha``, ``delta``, ``n_seeds`` (KN's n0) and ``max_seeds``
    """
    if study_cfg.race_rule == "holm":
        comparisons = compare_to_best({p: accuracies[p] for p in in_race}, study_cfg.alpha)
        going_on = tuple(sorted(p for p, c in comparisons.items() if c.verdict in ("best", "tied")))
        end = ONE_LEFT if len(going_on) < 2 else BUDGET if have >= study_cfg.max_seeds else ""
        return Step(going_on, end)
    screening = decision.kn_screen(accuracies, study_cfg.n_seeds, study_cfg.delta, study_cfg.alpha, have)
    going_on = tuple(p for p in screening.survivors if p in in_race)
    if len(going_on) < 2:
        return Step(going_on, ONE_LEFT)
    if decision.all_within(decision.mcb({p: accuracies[p] for p in going_on}, study_cfg.alpha), study_cfg.delta):
        return Step(going_on, WITHIN_DELTA)
    return Step(going_on, BUDGET if have >= study_cfg.max_seeds else "")


def race_end(study):
    """How the race stopped, as it recorded it in the study (see RACE_END), or {} while it runs or without one."""
    return dict(study.user_attrs.get(RACE_END, {}))


def race_left(study):
    """point -> round after which it left the race, as the race recorded it in the study."""
    return {int(point): round_ for point, round_ in study.user_attrs.get(RACE_LEFT, {}).items()}


def standings(study):
    """point -> (round, replicate -> accuracy) of each point's latest completed trial."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {point: (t.user_attrs.get(ROUND, 1), replicate_accuracies(t)) for point, t in latest_trials(complete).items()}


def advance(shared, config: SearchConfig):
    """Enqueue the next round of the race when the current one is over and it goes on; returns whether it did.

    Call it when this worker finds nothing to claim; ``shared`` is the study's queue.TrialQueue. Runs under
    the study lock.
    """
    study_cfg, study = config.study, shared.study
    if study_cfg.kind != "fine" or not study_cfg.race:
        return False
    with shared.lock():
        decided = study.user_attrs.get(RACE_ROUNDS, {})
        if _enqueue(study, study_cfg, decided):
            return True
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)):
            return False  # the current round is not over everywhere
        latest = standings(study)
        if not latest:
            return False
        current = max(round_ for round_, _ in latest.values())
        in_race = {point: accuracies for point, (round_, accuracies) in latest.items() if round_ == current}
        have = max(len(accuracies) for accuracies in in_race.values())
        step = next_step({point: accuracies for point, (_, accuracies) in latest.items()}, in_race, have,
                         study_cfg)
        left = race_left(study)
        for point, (round_, _) in latest.items():
            if point not in left and (round_ < current or point not in step.going_on):
                left[point] = round_
        study.set_user_attr(RACE_LEFT, {str(point): round_ for point, round_ in sorted(left.items())})
        if step.end:
            study.set_user_attr(RACE_END, {"rule": study_cfg.race_rule, "reason": step.end, "round": current,
                                           "replicates": have, "points": list(step.going_on),
                                           "alpha": study_cfg.alpha, "delta": study_cfg.delta})
            return False
        new = list(range(have, min(have + study_cfg.race_seeds, study_cfg.max_seeds)))
        decided = {**decided, str(current + 1): {"points": list(step.going_on), "replicates": new}}
        study.set_user_attr(RACE_ROUNDS, decided)
        _enqueue(study, study_cfg, decided)
        return True


def _enqueue(study, study_cfg, decided):
    """Enqueue the trials the decided rounds lack; returns how many."""
    points = study_cfg.points
    entries = {}
    for round_, decision in decided.items():
        round_ = int(round_)
        for point in decision["points"]:
            entries[point + len(points) * (round_ - 1)] = (
                points[point], {POINT: point, ROUND: round_, NEW_REPLICATES: decision["replicates"]})
    return queue.enqueue_missing(study, entries)
