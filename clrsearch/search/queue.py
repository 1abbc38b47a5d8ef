"""The trial queue: where studies live, and how workers share their trials safely.

A study is an Optuna study in an RDB storage: SQLite by default (one machine,
any number of processes), PostgreSQL to share it between machines. Every
lambda of a study has a *slot*: the lambdas of random and grid studies are
enqueued once, up front, as WAITING trials of slots 0, 1, ...; a trial asked
from TPE gets its own number as slot.

Every change of a trial's owner happens under :func:`study_lock` (a file
lock beside a SQLite database, an advisory lock in PostgreSQL): creating the
study and its tables, claiming trials with ``study.ask()`` (WAITING ->
RUNNING, not atomic on SQLite), failing the trials of dead workers and
enqueueing their copies, recording results. Under the lock a slot is claimed
by one worker and has at most one live trial. Nothing else is done under it:
MLflow is never called there.

Running trials beat Optuna's heartbeat. A trial whose worker died is failed
(at once when the worker was on this machine, after the grace period through
``optuna.storages.fail_stale_trials`` otherwise) and Optuna's
``RetryHeartbeatStaleTrialCallback`` enqueues a copy of it, with the same
lambda, up to ``WORKER_TIMING.max_deaths`` times per slot; a slot whose
workers died more often is *lost* (:func:`lost_slots`) until a study command
starts again and gives it as many tries anew (:meth:`TrialQueue.retry_lost`).
Only deaths count: a trial given back on Ctrl-C (reason "interrupted"), on an
infrastructure error such as a full disk or a storage out of reach (reason
"infrastructure: ..."), or on another error is copied the same way without
counting, and so is a trial taken over while its worker still ran (its
heartbeat stalled, e.g. on a slow storage): those are listed in the user attr
``spared`` that a slot's copies carry.
"""

import contextlib
import copy
import warnings
from dataclasses import dataclass

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .. import outages, processes
from ..config import DEFAULT_STORAGE, WORKER_TIMING
from ..errors import UsageError, first_line, redact
from ..files import create_whole, file_lock, missing, sqlite_path
from . import workers

SCHEMES = ("sqlite", "postgresql")
# SQLAlchemy picks the driver of postgresql:// URLs (psycopg2 before 2.1, psycopg 3 since); +psycopg2 names one.
DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'"}
WORKER_ATTR = "clrsearch:worker"  # host:pid:start:table of the process running a trial (processes.identity)
SLOT = "slot"  # user attr: which lambda of the study a trial evaluates
INTERRUPTED = "interrupted"  # reason of a trial given back on Ctrl-C
INFRASTRUCTURE = "infrastructure"  # first word of the reason of a trial given back on a disk or storage error
# User attrs a slot's copies carry: the numbers of its failed trials that were no death (their worker lived), and
# the number from which its deaths count (a study command started again gives a lost slot its tries anew).
SPARED, DEATHS_FROM = "spared", "deaths_from"
# User attrs of an enqueued trial, carried to the copies of its slot: the point of the study it evaluates,
# the round of the race it belongs to (1 for the first) and the replicates it trains.
POINT, ROUND, NEW_REPLICATES = "point", "round", "new_replicates"
_ADVISORY_KEY = 20151506  # pg_advisory_lock key of study_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats are marked experimental in Optuna; they are what makes studies crash-safe. Optuna warns when a
# study with heartbeats is asked outside ``optimize``; here the heartbeat is beaten by :meth:`TrialQueue.heartbeat`.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
CARRIED = (SLOT, POINT, ROUND, NEW_REPLICATES, SPARED, DEATHS_FROM)  # user attrs a copy of a failed trial keeps
_RETRY = RetryHeartbeatStaleTrialCallback()  # the copy itself; :func:`_retry` decides whether one is due


def storage_url(url=None):
    """The storage URL to use, checked; relative SQLite paths get their folder created.

    Raises UsageError for anything but a file-backed SQLite or a PostgreSQL
    URL, and for a PostgreSQL URL whose driver is not installed.
    """
    import sqlalchemy

    url = url or DEFAULT_STORAGE
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES or "://" not in url:
        raise UsageError(f"storage {redact(url)!r} is not a database URL; use sqlite:///path.db or "
                         f"postgresql://USER@HOST/DB")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        dialect = parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as error:
        raise UsageError(f"storage {redact(url)!r} is not a valid database URL ({first_line(error)}); use "
                         f"sqlite:///path.db or postgresql://USER@HOST/DB") from None
    if scheme == "sqlite":
        path = sqlite_path(url)
        if path is None or str(path) in ("", ":memory:"):
            raise UsageError(f"storage {redact(url)!r} would live in memory and die with the process; give a file, "
                             f"e.g. sqlite:///studies/clrsearch.db")
        if path.is_dir():
            raise UsageError(f"storage {url!r} names a folder; give a file, e.g. sqlite:///studies/clrsearch.db")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the folder of the storage {redact(url)!r} ({error.strerror}); "
                             f"give a path you can write to") from None
    else:
        if not parsed.database:
            raise UsageError(f"storage {redact(url)!r} names no database; use postgresql://USER@HOST/DB")
        try:
            dialect.import_dbapi()
        except ImportError:
            driver = parsed.get_driver_name()
            raise UsageError(f"storage {redact(url)} needs the PostgreSQL driver {driver}: pip install "
                             f"{DRIVERS.get(driver, driver)} (or pip install 'clrsearch[postgres]')") from None
    return url


@contextlib.contextmanager
def study_lock(url, patience=None):
    """Serialise, among all workers sharing ``url``, what changes who owns which trial; a PostgreSQL server
    out of reach is waited for as the :class:`~clrsearch.outages.Patience` ``patience`` says (None: not).

    SQLite: an exclusive lock on a file beside the database. PostgreSQL: a
    session-level advisory lock, taken on its own connection before any table
    exists, so it also covers the creation of Optuna's tables. Either is
    released when its process dies.
    """
    path = sqlite_path(url)
    if path is not None:
        def refuse(error):
            return UsageError(f"cannot create the lock file {path}.lock of the storage {url!r} ({error.strerror}); "
                              f"give a storage in a folder you can write to")

        with file_lock(path, refuse):
            yield
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    if patience is not None:
        patience.retry_connects(engine, f"the storage {url}")
    try:
        connection = engine.connect()
    except sqlalchemy.exc.OperationalError as error:  # no patience, or not an outage
        engine.dispose()
        raise UsageError(f"cannot reach the storage {redact(url)}: {first_line(error.orig or error)}; "
                         f"check the server runs and the URL names an existing database") from None
    try:
        # Should this machine vanish while it holds the lock, the server ends the session (and the lock)
        # after about 25 s of silence instead of the system's default of hours.
        for name, value in (("tcp_keepalives_idle", 10), ("tcp_keepalives_interval", 5), ("tcp_keepalives_count", 3)):
            connection.execute(sqlalchemy.text(f"SET {name} = {value}"))
        connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_ADVISORY_KEY})"))
        try:
            yield
        finally:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({_ADVISORY_KEY})"))
    finally:
        connection.close()
        engine.dispose()


def open_storage(url, timing=WORKER_TIMING):
    """An RDB storage with heartbeats every ``timing.heartbeat_seconds``, whose trials silent for
    ``timing.grace_seconds`` get a copy (:func:`_retry`). Call it under study_lock.

    A missing SQLite file is made whole first: Optuna's tables are created in a file beside it, then renamed
    into place (:func:`clrsearch.files.create_whole`), so that a process killed meanwhile leaves no storage."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    path = sqlite_path(url)
    try:
        if path is not None and missing(path):
            create_whole(path, lambda temporary: _built(url, temporary))
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=timing.heartbeat_seconds,
                          grace_period=timing.grace_seconds, heartbeat_stale_trial_callback=_retry)
    except UsageError:
        raise
    except Exception as error:  # sqlalchemy raises many kinds for a bad URL or an unreachable server
        raise UsageError(f"cannot open the storage {redact(url)}: {first_line(error)}") from None


def _built(url, temporary):
    """Optuna's tables in the new SQLite file ``temporary``, opened with the query of ``url``."""
    query = url.partition("?")[2]
    RDBStorage(f"sqlite:///{temporary}" + (f"?{query}" if query else "")).engine.dispose()


def read_trials(url, name):
    """The trials of study ``name``, read as the workers read them (under their lock); [] before it exists."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return []
    with study_lock(url):
        try:
            return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
        except KeyError:
            return []


def finished_trials(study):
    """Trials that count as done: completed, pruned, or failed for a reason of their own (e.g. diverged)."""
    return [t for t in study.get_trials(deepcopy=False) if is_final(t)]


def enqueue_missing(study, entries):
    """Enqueue the entries slot -> (params, user attrs) whose slot has no trial yet; returns how many.

    Call it under study_lock.
    """
    slots = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    missing = [(slot, entry) for slot, entry in sorted(entries.items()) if slot not in slots]
    for slot, (params, user_attrs) in missing:
        study.enqueue_trial(params, user_attrs={SLOT: slot, **user_attrs})
    return len(missing)


@dataclass(frozen=True)
class LostSlot:
    """A slot left without a live or final trial: its workers died more than ``max_deaths`` times."""

    slot: int
    point: int  # the point of the study it evaluates
    params: dict  # the point: lam, and any schedule dimension of the grid
    deaths: int
    last: object  # its last trial (FrozenTrial)


def lost_slots(study):
    """The slots of ``study`` given up after too many deaths, by slot."""
    by_slot = {}
    for frozen in study.get_trials(deepcopy=False):
        by_slot.setdefault(frozen.user_attrs.get(SLOT), []).append(frozen)
    lost = []
    for slot, trials in sorted((item for item in by_slot.items() if item[0] is not None), key=lambda item: item[0]):
        if any(is_live(t) or is_final(t) for t in trials):
            continue
        last = max(trials, key=lambda t: t.number)
        params = last.params or last.system_attrs.get("fixed_params") or {}
        lost.append(LostSlot(slot, last.user_attrs.get(POINT, slot), dict(params), _deaths(trials), last))
    return lost


def infrastructure(error):
    """Whether ``error`` comes from the machine rather than the trial: a disk (e.g. full), a network, the storage."""
    import sqlalchemy

    return isinstance(error, (OSError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError))


def give_back_reason(error):
    """The reason recorded for a trial given back on ``error``: none of them counts as a death."""
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return INTERRUPTED
    if infrastructure(error):
        return f"{INFRASTRUCTURE}: {first_line(error)}"
    return f"error: {type(error).__name__}: {first_line(error)}"


def is_live(frozen):
    """Whether a trial may still produce a result: waiting or running."""
    return frozen.state in (TrialState.WAITING, TrialState.RUNNING)


def is_final(frozen):
    """Whether a trial is the result of its slot: completed, pruned, or failed for a reason of its own."""
    return (frozen.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (frozen.state == TrialState.FAIL and bool(frozen.user_attrs.get("final_failure"))))


def worker_dead(frozen, grace):
    """Whether the worker of a running trial is dead (:func:`processes.dead`, after ``grace`` seconds of
    silence); a trial that names no worker yet (claimed by a process that died before it could) is judged by
    its start."""
    worker = frozen.system_attrs.get(WORKER_ATTR)
    started = frozen.datetime_start.timestamp() if worker is None and frozen.datetime_start else None
    return processes.dead(worker, started, grace)


class TrialQueue:
    """A study shared with other workers, in the storage this process opened for it (:func:`open_storage`),
    with the ``timing`` of its heartbeats; from here on a PostgreSQL server out of reach is waited for up to
    ``timing.outage_seconds`` (``patience``, see :mod:`clrsearch.outages`)."""

    def __init__(self, study, storage, url, timing=WORKER_TIMING):
        self.study, self.storage, self.url, self.timing = study, storage, url, timing
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.patience = outages.Patience(timing.outage_seconds if sqlite_path(url) is None else 0)
        if sqlite_path(url) is None:
            self.patience.retry_connects(storage.engine, f"the storage {url}")

    def lock(self):
        return study_lock(self.url, self.patience)

    def trial_id(self, number):
        """The storage's id of trial ``number``."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def running(self):
        """Trials running anywhere, in this process or in other workers."""
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    def claim(self, config):
        """Claim the next population of trials for this process with ``study.ask()``; [] when nothing is left.

        WAITING trials (enqueued points, copies of lost trials) come first, in
        the order they were enqueued; an adaptive sampler is then asked for as
        many new trials as the study still lacks. Each claimed trial beats once
        and names this process as its worker. Should the claim fail half-way
        (e.g. the storage), the trials it asked for are given back.
        """
        study, study_cfg = self.study, config.study
        limit = study_cfg.trials_per_population
        trials = []
        with self.lock():
            n = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            if study_cfg.sampler not in ("random", "grid"):
                missing = study_cfg.n_trials - len(finished_trials(study)) - self.running() - n
                n += max(0, missing)
            try:
                for _ in range(min(limit, n)):
                    trials.append(study.ask())
                    trial = trials[-1]
                    if SLOT not in trial.user_attrs:
                        trial.set_user_attr(SLOT, trial.number)
                    trial_id = self.trial_id(trial.number)
                    self.storage.record_heartbeat(trial_id)
                    self.storage.set_trial_system_attr(trial_id, WORKER_ATTR, processes.identity())
            except BaseException as error:
                with workers.no_interrupt(), contextlib.suppress(Exception):
                    for trial in trials:
                        self._fail(trial.number, give_back_reason(error))
                raise
        return trials

    def states(self):
        """(number, state) of every trial of the study, read under the lock: one moment of the whole study."""
        with self.lock():
            return tuple((t.number, t.state) for t in self.study.get_trials(deepcopy=False))

    def heartbeat(self, trials):
        """A :class:`processes.Heartbeat` of the given trials while they run."""
        ids = [self.trial_id(t.number) for t in trials]
        return processes.Heartbeat(lambda: [self.storage.record_heartbeat(i) for i in ids],
                                   self.timing.heartbeat_seconds)

    def recover(self):
        """Fail the running trials of dead workers and copy each; give every slot left without a live or final
        trial its copy (a worker killed between failing a trial and copying it left one)."""
        with self.lock():
            for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if worker_dead(frozen, self.timing.grace_seconds):
                    worker = frozen.system_attrs.get(WORKER_ATTR)
                    self._fail(frozen.number, f"worker {processes.label(worker) if worker else '(unknown)'} died")
            optuna.storages.fail_stale_trials(self.study)  # workers elsewhere, silent too long: calls _retry
            by_slot = {}
            for frozen in self.study.get_trials(deepcopy=False):
                by_slot.setdefault(frozen.user_attrs.get(SLOT), []).append(frozen)
            for slot, trials in by_slot.items():
                if slot is not None and not any(is_live(t) or is_final(t) for t in trials):
                    _retry(self.study, max(trials, key=lambda t: t.number))

    def give_back(self, trials, reason=INTERRUPTED):
        """Fail the trials this process cannot finish (e.g. on Ctrl-C) with ``reason`` (see
        :func:`give_back_reason`) and copy them; finished ones are left alone. Ctrl-C and SIGTERM are ignored
        meanwhile, so that a second one does not half give a trial back."""
        with workers.no_interrupt(), self.lock():
            for trial in trials:
                self._fail(trial.number, reason)

    def spare(self, numbers):
        """Take the failed trials ``numbers`` off their slots' deaths: this process ran them until another worker
        took them over (their heartbeat stalled). A slot lost by those deaths gets its copy."""
        if not numbers:
            return
        with self.lock():
            for number in numbers:
                trials = self.study.get_trials(deepcopy=False)
                failed = trials[number]
                if failed.state != TrialState.FAIL or is_final(failed):
                    continue
                same_slot = [t for t in trials if t.user_attrs.get(SLOT) == failed.user_attrs.get(SLOT)]
                spared = sorted(_spared(same_slot) | {number})
                live = [t for t in same_slot if is_live(t)]
                for t in live:
                    self.storage.set_trial_user_attr(self.trial_id(t.number), SPARED, spared)
                if not live:
                    failed = copy.deepcopy(failed)
                    failed.user_attrs[SPARED] = spared
                    _retry(self.study, failed)

    def retry_lost(self):
        """Give every lost slot (:func:`lost_slots`) a copy whose deaths count anew; returns those slots."""
        with self.lock():
            lost = lost_slots(self.study)
            for slot in lost:
                last = copy.deepcopy(slot.last)
                last.user_attrs[DEATHS_FROM] = last.number + 1
                _retry(self.study, last)
        return lost

    def _fail(self, number, reason):
        """Fail trial ``number`` with ``reason`` if it still runs, and copy it."""
        trial_id = self.trial_id(number)
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.storage.set_trial_user_attr(trial_id, "reason", reason)
            if self.storage.set_trial_state_values(trial_id, TrialState.FAIL):
                _retry(self.study, self.storage.get_trial(trial_id))


def _deaths(trials):
    """How many of a slot's trials were lost with their worker, since its deaths count (:data:`DEATHS_FROM`).

    A death is a trial failed for no reason of its own (not ``final_failure``)
    and not given back: its worker was found dead, or silent past the grace
    period, and was not seen alive after (:data:`SPARED`).
    """
    start = max((t.user_attrs.get(DEATHS_FROM, 0) for t in trials), default=0)
    spared = _spared(trials)
    return sum(1 for t in trials if t.number >= start and t.number not in spared and t.state == TrialState.FAIL
               and not t.user_attrs.get("final_failure") and not _given_back(t.user_attrs.get("reason")))


def _given_back(reason):
    return reason is not None and (reason == INTERRUPTED or reason.startswith((f"{INFRASTRUCTURE}:", "error:")))


def _spared(trials):
    """The numbers of a slot's failed trials that were no death, as its trials carry them."""
    return {number for t in trials for number in t.user_attrs.get(SPARED, ())}


def _retry(study, failed):
    """Enqueue a copy of a failed trial with Optuna's retry callback: same params, the user attrs of its slot.

    Also Optuna's heartbeat-stale callback (runs under study_lock). No copy
    when the slot has a live or final trial, when it died more than
    ``WORKER_TIMING.max_deaths`` times, or when the trial had no lambda yet
    (an asked trial: the sampler asks again).
    """
    slot = failed.user_attrs.get(SLOT)
    failed = copy.deepcopy(failed)
    if failed.user_attrs.get("reason") is None and processes.alive(failed.system_attrs.get(WORKER_ATTR)):
        # failed as stale (fail_stale_trials) while its worker, in this process table, still ran: no death
        failed.user_attrs[SPARED] = sorted({*failed.user_attrs.get(SPARED, ()), failed.number})
    same_slot = [failed if t.number == failed.number else t
                 for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SLOT) == slot]
    if (slot is None or not (failed.params or failed.system_attrs.get("fixed_params"))
            or any(is_live(t) or is_final(t) for t in same_slot) or _deaths(same_slot) > WORKER_TIMING.max_deaths):
        return
    failed.user_attrs = {key: failed.user_attrs[key] for key in CARRIED if key in failed.user_attrs}
    spared = _spared(same_slot)
    if spared:
        failed.user_attrs[SPARED] = sorted(spared)
    failed.system_attrs = {key: value for key, value in failed.system_attrs.items() if key != WORKER_ATTR}
    _RETRY(study, failed)
