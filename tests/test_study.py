"""The Optuna study of a search (clrsearch.search.study): its planned lambdas against the draws of a
seeded NumPy generator, the fine grid derived from coarse trials chosen by hand, and a study that is
created once, filled with its points, and refused when resumed with other settings."""

from dataclasses import replace
from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from clrsearch.config import DEFAULT_SEARCH, SearchConfig, StudyConfig
from clrsearch.errors import UsageError
from clrsearch.search import queue, study
from helpers import log_uniform_draws


def test_planned_lambdas_are_the_seeded_log_uniform_draws():
    assert study.planned_lambdas(StudyConfig(n_trials=4)) == pytest.approx(
        log_uniform_draws(0, 4, 1e-5, 1e-1), rel=1e-12)
    other = StudyConfig(n_trials=3, seed=7, lam_min=1e-4, lam_max=3.0)
    assert study.planned_lambdas(other) == pytest.approx(log_uniform_draws(7, 3, 1e-4, 3.0), rel=1e-12)


def test_more_trials_extend_the_planned_lambdas():
    assert study.planned_lambdas(StudyConfig(n_trials=6))[:4] == study.planned_lambdas(StudyConfig(n_trials=4))


def coarse_study(values_by_lam, extra=()):
    """An in-memory coarse study of COMPLETE trials lambda -> value, and ``extra`` trials (lam, state, value)."""
    coarse = optuna.create_study(study_name="hand-made", direction="maximize")
    distribution = FloatDistribution(1e-5, 1e-1, log=True)
    for lam, value in values_by_lam.items():
        coarse.add_trial(create_trial(params={study.LAM: lam}, distributions={study.LAM: distribution}, value=value))
    for lam, state, value in extra:
        coarse.add_trial(create_trial(params={study.LAM: lam}, distributions={study.LAM: distribution}, state=state,
                                      value=value, intermediate_values={1: 0.99}))
    return coarse


def test_derive_grid_runs_from_zero_to_twice_the_largest_of_the_best_three_lambdas():
    # Best three by value: 7e-4 (0.52), 2.2e-3 (0.50), 3e-3 (0.45); the largest of them is 3e-3, so the
    # grid ends at 6e-3. 4 points: step 6e-3 / 3 = 2e-3. 5e-2 is left out: it is not among the best three.
    coarse = coarse_study({1e-4: 0.40, 7e-4: 0.52, 2.2e-3: 0.50, 3e-3: 0.45, 5e-2: 0.30},
                          extra=[(9e-2, TrialState.PRUNED, None), (8e-2, TrialState.FAIL, None)])
    assert study.derive_grid(coarse, 4) == (0.0, 0.002, 0.004, 0.006)


def test_derive_grid_rounds_the_step_to_two_significant_digits():
    # Best three: 1.3e-3 (0.5), 1e-3 (0.49), 2e-4 (0.48): top 2.6e-3; 8 points: 2.6e-3 / 7 = 3.714...e-4 -> 3.7e-4.
    coarse = coarse_study({2e-4: 0.48, 1e-3: 0.49, 1.3e-3: 0.50, 1e-5: 0.2})
    assert study.derive_grid(coarse, 8) == pytest.approx(
        (0.0, 0.00037, 0.00074, 0.00111, 0.00148, 0.00185, 0.00222, 0.00259), abs=1e-15)


def test_derive_grid_needs_a_completed_coarse_trial():
    coarse = coarse_study({}, extra=[(1e-3, TrialState.PRUNED, None)])
    with pytest.raises(UsageError, match="has no completed trials"):
        study.derive_grid(coarse, 4)


@pytest.fixture
def storage_url(study_url):
    return study_url


def open_study(config, url):
    """What the runner does: under the study lock, resolve the grid and create or load the study."""
    with queue.study_lock(url):
        storage = queue.open_storage(url)
        config = study.resolve_grid(config, storage)
        return config, study.create_or_load(config, storage)


def fine(grid=(), **fields):
    base = DEFAULT_SEARCH["fine"]
    return replace(base, study=replace(base.study, grid=tuple(grid), **fields))


def coarse(**fields):
    base = DEFAULT_SEARCH["coarse"]
    return replace(base, study=replace(base.study, **fields))


def test_a_coarse_study_is_created_with_its_planned_lambdas_enqueued_in_slot_order(storage_url):
    config, created = open_study(coarse(n_trials=3), storage_url)
    waiting = created.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[queue.SLOT] for t in waiting] == [0, 1, 2]
    assert [(t.user_attrs[queue.POINT], t.user_attrs[queue.ROUND]) for t in waiting] == [(0, 1), (1, 1), (2, 1)]
    assert all(t.user_attrs[queue.NEW_REPLICATES] == [0, 1, 2] for t in waiting)  # the first round: n_seeds of each
    assert [t.system_attrs["fixed_params"][study.LAM] for t in waiting] == pytest.approx(
        log_uniform_draws(0, 3, 1e-5, 1e-1), rel=1e-12)
    attrs = created.user_attrs
    assert (attrs["kind"], attrs["sampler"], attrs["seeds"]) == ("coarse", "random", [0, 1, 2])
    assert attrs["protocol"] == study.protocol_params(config)
    assert created.direction == optuna.study.StudyDirection.MAXIMIZE

    _, again = open_study(coarse(n_trials=5), storage_url)  # resumed with more trials: two more slots
    assert [t.user_attrs[queue.SLOT] for t in again.get_trials()] == [0, 1, 2, 3, 4]


def test_a_given_fine_grid_is_sorted_and_enqueued_once(storage_url):
    config, created = open_study(fine((0.003, 0.0, 0.001)), storage_url)
    assert config.study.grid == (("lam", (0.0, 0.001, 0.003)),)
    assert created.user_attrs["grid"] == [["lam", [0.0, 0.001, 0.003]]]
    assert [t.system_attrs["fixed_params"][study.LAM] for t in created.get_trials()] == [0.0, 0.001, 0.003]
    _, again = open_study(fine((0.0, 0.001, 0.003)), storage_url)
    assert len(again.get_trials()) == 3


def test_a_fine_study_without_a_grid_takes_its_own_then_derives_one_from_the_coarse_study(storage_url):
    with pytest.raises(UsageError, match="no coarse study 'coarse'"):
        open_study(fine(), storage_url)
    made = coarse_study({1e-4: 0.40, 7e-4: 0.52, 2.2e-3: 0.50, 3e-3: 0.45})
    stored = optuna.create_study(study_name="coarse", storage=storage_url, direction="maximize")
    stored.add_trials(made.get_trials())
    config, created = open_study(fine(grid_points=4), storage_url)
    assert config.study.grid == (("lam", (0.0, 0.002, 0.004, 0.006)),)
    # Resumed after the coarse study changed: the fine study keeps the grid it was created with.
    stored.add_trial(create_trial(params={study.LAM: 5e-2}, distributions={study.LAM: FloatDistribution(1e-5, 1e-1,
                                                                                                          log=True)},
                                  value=0.9))
    config, _ = open_study(fine(grid_points=4), storage_url)
    assert config.study.grid == (("lam", (0.0, 0.002, 0.004, 0.006)),)


@pytest.mark.parametrize("change, key", [
    (lambda c: replace(c, study=replace(c.study, n_seeds=2)), "seeds"),
    (lambda c: replace(c, train=replace(c.train, n_s=450)), "protocol"),
    (lambda c: replace(c, data=replace(c.data, split_seed=1)), "protocol"),
    (lambda c: replace(c, study=replace(c.study, sampler="tpe")), "sampler"),
])
def test_a_study_resumed_with_other_settings_is_refused_naming_what_differs(storage_url, change, key):
    open_study(coarse(n_trials=2), storage_url)
    with pytest.raises(UsageError) as error:
        open_study(change(coarse(n_trials=2)), storage_url)
    message = str(error.value)
    assert f"study 'coarse' already exists with another {key}" in message and "\n" not in message


def test_a_fine_study_resumed_with_another_grid_is_refused(storage_url):
    open_study(fine((0.0, 0.001)), storage_url)
    with pytest.raises(UsageError, match="already exists with another grid"):
        open_study(fine((0.0, 0.002)), storage_url)


class Killed(BaseException):
    """A process killed at this moment: nothing after it runs, nothing catches it."""


@pytest.mark.parametrize("writes", [0, 1, 2, 3, 5])
def test_a_study_whose_creation_was_killed_between_its_identity_writes_is_resumed(storage_url, monkeypatch, writes):
    config = coarse(n_trials=3)
    done, write = [], optuna.Study.set_user_attr

    def cut_short(self, key, value):  # the process dies after ``writes`` user attrs
        if len(done) == writes:
            raise Killed
        done.append(key)
        write(self, key, value)

    with monkeypatch.context() as patch:
        patch.setattr(optuna.Study, "set_user_attr", cut_short)
        with pytest.raises(Killed):
            open_study(config, storage_url)
    left = optuna.load_study(study_name="coarse", storage=storage_url)
    assert set(left.user_attrs) == set(done) and left.get_trials() == []

    _, resumed = open_study(config, storage_url)  # the same command again
    assert resumed.user_attrs["seeds"] == [0, 1, 2] and resumed.user_attrs["alpha"] == config.study.alpha
    assert resumed.user_attrs["protocol"] == study.protocol_params(config)
    assert [t.user_attrs[queue.SLOT] for t in resumed.get_trials()] == [0, 1, 2]
    with pytest.raises(UsageError, match="already exists with another seeds"):
        open_study(coarse(n_trials=3, n_seeds=2), storage_url)


def test_a_study_cut_short_is_still_refused_for_an_identity_it_has(storage_url, monkeypatch):
    write = optuna.Study.set_user_attr
    with monkeypatch.context() as patch:
        patch.setattr(optuna.Study, "set_user_attr", lambda self, key, value: (
            write(self, key, value) if key == "kind" else None))
        open_study(coarse(n_trials=2), storage_url)  # only "kind" was written, and the points enqueued
    with pytest.raises(UsageError, match="already exists with another sampler"):
        open_study(coarse(n_trials=2), storage_url)  # it has trials: a study of another version, not cut short
    optuna.delete_study(study_name="coarse", storage=storage_url)
    optuna.create_study(study_name="coarse", storage=storage_url).set_user_attr("kind", "fine")
    with pytest.raises(UsageError, match="already exists with another kind"):
        open_study(coarse(n_trials=2), storage_url)


def test_samplers_follow_the_config():
    assert isinstance(study.make_sampler(coarse()), optuna.samplers.RandomSampler)
    assert isinstance(study.make_sampler(coarse(sampler="tpe")), optuna.samplers.TPESampler)
    assert isinstance(study.make_sampler(fine((0.0, 0.1))), optuna.samplers.GridSampler)


def test_protocol_params_name_what_makes_trials_comparable():
    config = SearchConfig()
    params = study.protocol_params(config)
    assert params["n_s"] == config.train.n_s and params["split"] == config.data.split
    assert "lam" not in params and "n_trials" not in params and "storage" not in params


def test_latest_trials_keep_each_points_latest_round_before_a_given_one():
    def told(number, point, round_, accuracies):
        return SimpleNamespace(number=number, user_attrs={"point": point, "round": round_, "replicates":
                                                          list(range(len(accuracies))), "val_accuracies": accuracies})

    trials = [told(0, 0, 1, [0.5]), told(1, 1, 1, [0.6]), told(2, 0, 2, [0.5, 0.7]), told(3, 0, 3, [0.5, 0.7, 0.1])]
    assert {p: t.number for p, t in study.latest_trials(trials).items()} == {0: 3, 1: 1}
    assert {p: t.number for p, t in study.latest_trials(trials, before_round=3).items()} == {0: 2, 1: 1}
    assert study.latest_trials(trials, before_round=1) == {}
    assert study.replicate_accuracies(trials[2]) == {0: 0.5, 1: 0.7}
