"""Pruning inside a population: a hopeless trial stops at a rung, judged against the trials before it.

A *rung* of a trial is the end of one of its cycles before the last (the last
is its result): the coarse study's 2 cycles give one rung, cycle 1. At a rung
a trial's value is the mean validation accuracy of its replicates, the
members it trains in its population; it is reported to Optuna as the
intermediate value of step c (``trial.report``, at its last cycle end too), so
Optuna's intermediate-value plots show the rungs and a pruned trial's value is
the one it was pruned at.

The rule, for a trial of value v at rung c (:class:`PruningRule`):

- V holds v and the rung-c values of the trials *before* it: the trials of
  the study's first round with a lower slot and the same schedule (the same
  ``TrainConfig``: cycle c then means the same update steps) that reached
  rung c, whether they are finished, pruned, or training in this population
  or in another worker;
- once V holds ``warmup`` values, ``median`` prunes the trial when
  v < median(V) − ``margin``; ``halving`` (successive halving, Hyperband's
  inner loop) when v < the ⌈|V| / ``eta``⌉-th largest value of V − ``margin``.

``--pruner median`` is the median rule with a margin of 1 point of accuracy,
``--pruner hyperband`` successive halving keeping the best third, without a
margin (:data:`RULES`). No Optuna pruner is asked: one compares a trial only
with trials already finished, and the trials of one population finish together.

Why the trials before it, and all of them: a slot's value at a rung does not
depend on the population it trains in (docs/RELIABILITY.md), so V is the same
set of numbers in every run of the study, however its trials are grouped
into populations, whatever the number of workers, and after any crash. The
trials of this population with a lower slot reach the rung at the same step;
a trial with a lower slot running in another worker is waited for (it was
claimed earlier, and a worker waiting at a rung has reported its own values
at that rung first, so two workers never wait for each other). When such a
trial was lost with its worker before it reached the rung, this population
is given back (:class:`EarlierTrialLost`) and trained again after the lost
trial's copy: judging without it would give another verdict than the run
that had it.

Pruning acts in the first round of a study only. In a race
(:mod:`.race`) a point pruned by cycles has no completed trial, so it takes no
part in the comparison by replicates and gets no later round; the points of
later rounds are tied with the best on fully trained replicates, and are
neither reported nor pruned.
"""

import math
import time
from dataclasses import dataclass

import numpy as np
from optuna.trial import TrialState

from .. import processes
from . import queue
from .queue import ROUND, SLOT, WORKER_ATTR

KINDS = ("median", "halving")
# User attr of a trial that stopped reporting rungs (pruned, or all its replicates diverged): its last rung,
# 0 for none. A trial waiting for it at a later rung then knows that no value will come.
LAST_RUNG = "last_rung"


@dataclass(frozen=True)
class PruningRule:
    """When a trial is hopeless at a rung, given the values V of the trials at that rung (its own included)."""

    kind: str = "median"  # median | halving
    margin: float = 0.01  # accuracy (fraction 0..1) a trial must fall below the rung's threshold to be pruned
    warmup: int = 5  # values at the rung, the trial's own included, before the rung prunes anything
    eta: int = 3  # halving: the rung keeps the best 1/eta of V

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin < 1):
            raise ValueError(f"margin must be in [0, 1), not {self.margin!r}")
        if not (isinstance(self.warmup, int) and self.warmup >= 1):
            raise ValueError(f"warmup must be a positive integer, not {self.warmup!r}")
        if not (isinstance(self.eta, int) and self.eta >= 2):
            raise ValueError(f"eta must be an integer >= 2, not {self.eta!r}")

    def threshold(self, values):
        """The threshold of the values V: their median, or the ⌈|V| / eta⌉-th largest; None before warm-up."""
        if len(values) < self.warmup:
            return None
        if self.kind == "median":
            return float(np.median(values))
        return sorted(values, reverse=True)[math.ceil(len(values) / self.eta) - 1]

    def prunes(self, value, values):
        """Whether the trial of ``value`` is pruned at a rung whose values are ``values`` (``value`` among them)."""
        threshold = self.threshold(values)
        return threshold is not None and value < threshold - self.margin


# The rule of each --pruner (config.PRUNERS): why these settings is in docs/RESULTS.md, section pruning.
RULES = {"median": PruningRule("median", margin=0.01, warmup=5),
         "hyperband": PruningRule("halving", margin=0.0, warmup=5, eta=3)}


def rule_of(pruner):
    """The PruningRule of ``--pruner`` NAME; None for ``none``."""
    return RULES.get(pruner)


class EarlierTrialLost(Exception):
    """A trial before the judged one lacks its rung value and nobody trains it: its worker died before the rung."""

    def __init__(self, slots, rung):
        super().__init__(f"{'slot' if len(slots) == 1 else 'slots'} {', '.join(map(str, slots))} lost before "
                         f"rung {rung}")
        self.slots = tuple(slots)
        self.rung = rung


def earlier_values(shared, slot, rung, same_schedule):
    """slot -> value at ``rung`` of every first-round trial before ``slot`` on the same schedule that reached it.

    Waits while such a trial is still training in another worker; raises
    EarlierTrialLost when one was lost before the rung (its worker died, or
    it was given back, and its copy waits to be trained). ``same_schedule``
    tells from a trial's params whether it trains on the judged trial's schedule.
    """
    while True:
        values, pending = _earlier_values(shared.study, slot, rung, same_schedule, shared.timing.grace_seconds)
        if not pending:
            return values
        time.sleep(min(0.5, shared.timing.heartbeat_seconds))
        shared.recover()  # a worker that died meanwhile: its trials are failed, copies enqueued


def _earlier_values(study, slot, rung, same_schedule, grace):
    """(slot -> value at ``rung``, slots still training elsewhere) of the trials before ``slot``; see above
    (a worker silent for ``grace`` seconds is dead)."""
    me = processes.identity()
    by_slot = {}
    for t in study.get_trials(deepcopy=False):
        s = t.user_attrs.get(SLOT, t.number)
        if s < slot and t.user_attrs.get(ROUND, 1) == 1 and same_schedule(_params(t)):
            by_slot.setdefault(s, []).append(t)
    values, pending, lost = {}, set(), []
    for s, trials in sorted(by_slot.items()):
        reached = [t.intermediate_values[rung] for t in trials if rung in t.intermediate_values]
        if reached:  # any trial of the slot: a copy reports what the lost trial reported
            values[s] = reached[0]
        elif any(queue.is_final(t) or t.user_attrs.get(LAST_RUNG, rung) < rung for t in trials):
            continue  # pruned at an earlier rung, or diverged: it never reaches this one
        elif any(t.state == TrialState.RUNNING and _trained_elsewhere(t, me, grace) for t in trials):
            pending.add(s)
        elif any(queue.is_live(t) for t in trials):
            lost.append(s)  # its copy waits to be trained
        # else: the slot was given up after too many deaths, in every run alike: no value
    if lost:
        raise EarlierTrialLost(lost, rung)
    return values, pending


def _params(frozen):
    """A trial's params, or the params it was enqueued with when it has not suggested them yet."""
    return dict(frozen.params) or dict(frozen.system_attrs.get("fixed_params") or {})


def _trained_elsewhere(frozen, me, grace):
    """Whether a running trial belongs to another process that is not known to be dead."""
    return frozen.system_attrs.get(WORKER_ATTR) != me and not queue.worker_dead(frozen, grace)
