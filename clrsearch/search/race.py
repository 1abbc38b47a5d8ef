"""Racing in the fine study: more replicates for the points still tied with the best, round by round.

Round 1 trains ``n_seeds`` replicates of every grid point. After each round,
every completed point is compared with the best on their common replicates
(:mod:`.compare`); the points still ``tied`` with it, and the best itself,
get ``race_seeds`` more replicates in the next round, trained as one
population per replicate, until the best stands alone or the tied points
reach ``max_seeds`` replicates. Points called ``worse`` leave the race; the
study's user attr ``race_left`` records, per point, the round after which it
left.

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

When several points are still tied at ``max_seeds``, the tie-break is the
largest mean validation accuracy over all their replicates (the best
itself): the race has no evidence left to prefer another.
"""

from optuna.trial import TrialState

from ..config import SearchConfig
from . import queue
from .compare import compare_to_best
from .queue import NEW_REPLICATES, POINT, ROUND
from .study import RACE_LEFT, latest_trials, replicate_accuracies

RACE_ROUNDS = "race_rounds"  # study user attr: round -> {"points": [...], "replicates": [...]}, once decided


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
        comparisons = compare_to_best(in_race, study_cfg.alpha)
        left = race_left(study)
        for point, (round_, _) in latest.items():
            if point not in left and (round_ < current or comparisons[point].verdict == "worse"):
                left[point] = round_
        study.set_user_attr(RACE_LEFT, {str(point): round_ for point, round_ in sorted(left.items())})
        going_on = sorted(point for point, c in comparisons.items() if c.verdict in ("best", "tied"))
        have = max(len(accuracies) for accuracies in in_race.values())
        if len(going_on) < 2 or have >= study_cfg.max_seeds:
            return False
        new = list(range(have, min(have + study_cfg.race_seeds, study_cfg.max_seeds)))
        decided = {**decided, str(current + 1): {"points": going_on, "replicates": new}}
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
