"""The trial queue: where studies live, and how workers share their trials safely.

A study is an Optuna study in an RDB storage: SQLite by default (one machine,
any number of processes), PostgreSQL to share it between machines. Every
lambda of a study has a *slot*: the lambdas of random and grid studies are
enqueued once, up front, as WAITING trials of slots 0, 1, ...; a trial asked
from TPE gets its own number as slot.

Every change of a trial's owner happens under :func:`study_lock` (a file
lock beside a SQLite database, an advisory lock in PostgreSQL): creating the
study and its tables, claiming WAITING trials (WAITING -> RUNNING), failing
the trials of dead workers and enqueueing their copies, recording results.
Optuna's own
WAITING -> RUNNING transition is not atomic on SQLite, and two workers failing
the same stale trial would otherwise both enqueue a copy; under the lock a
slot is claimed by one worker and has at most one live trial.

Running trials beat a heartbeat. A trial whose worker died is failed (at once
when the worker was on this machine, after the grace period through Optuna's
``fail_stale_trials`` otherwise) and a copy of its slot with the same lambda
is enqueued, up to ``WORKER_TIMING.max_deaths`` times per slot. A trial given back on
Ctrl-C is failed with the reason "interrupted" and enqueued again; that does
not count as a death.
"""

import contextlib
import fcntl
import threading
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from .. import processes
from ..config import DEFAULT_STORAGE, WORKER_TIMING
from ..errors import UsageError, first_line, redact
from . import workers

SCHEMES = ("sqlite", "postgresql")
# SQLAlchemy picks the driver of postgresql:// URLs (psycopg2 before 2.1, psycopg 3 since); +psycopg2 names one.
DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "'psycopg[binary]'"}
WORKER_ATTR = "clrsearch:worker"  # host:pid:start of the process running a trial
SLOT = "slot"  # user attr: which lambda of the study a trial evaluates
INTERRUPTED = "interrupted"  # reason of a trial given back on Ctrl-C
# User attrs of an enqueued trial, carried to the copies of its slot: the point of the study it evaluates,
# the round of the race it belongs to (1 for the first) and the replicates it trains.
POINT, ROUND, NEW_REPLICATES = "point", "round", "new_replicates"
_ADVISORY_KEY = 20151506  # pg_advisory_lock key of study_lock

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats are marked experimental in Optuna; they are what makes studies crash-safe.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(url=None):
    """The storage URL to use, checked; relative SQLite paths get their folder created.

    Raises UsageError for anything but a file-backed SQLite or a PostgreSQL
    URL, and for a PostgreSQL URL whose driver is not installed.
    """
    import sqlalchemy

    url = url or DEFAULT_STORAGE
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES or "://" not in url:
        raise UsageError(f"storage {url!r} is not a database URL; use sqlite:///path.db or "
                         f"postgresql://USER@HOST/DB")
    try:
        parsed = sqlalchemy.engine.make_url(url)
        dialect = parsed.get_dialect()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as error:
        raise UsageError(f"storage {url!r} is not a valid database URL ({first_line(error)}); use "
                         f"sqlite:///path.db or postgresql://USER@HOST/DB") from None
    if scheme == "sqlite":
        path = sqlite_path(url)
        if path is None or str(path) in ("", ":memory:"):
            raise UsageError(f"storage {url!r} would live in memory and die with the process; give a file, "
                             f"e.g. sqlite:///studies/clrsearch.db")
        if path.is_dir():
            raise UsageError(f"storage {url!r} names a folder; give a file, e.g. sqlite:///studies/clrsearch.db")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"cannot create the folder of the storage {url!r} ({error.strerror}); "
                             f"give a path you can write to") from None
    else:
        if not parsed.database:
            raise UsageError(f"storage {url!r} names no database; use postgresql://USER@HOST/DB")
        try:
            dialect.import_dbapi()
        except ImportError:
            driver = parsed.get_driver_name()
            raise UsageError(f"storage {redact(url)} needs the PostgreSQL driver {driver}: pip install "
                             f"{DRIVERS.get(driver, driver)} (or pip install 'clrsearch[postgres]')") from None
    return url


def sqlite_path(url):
    """The database file of a sqlite:/// URL, else None."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


@contextlib.contextmanager
def study_lock(url):
    """Serialise, among all workers sharing ``url``, what changes who owns which trial.

    SQLite: an exclusive lock on a file beside the database. PostgreSQL: a
    session-level advisory lock, taken on its own connection before any table
    exists, so it also covers the creation of Optuna's tables. Either is
    released when its process dies.
    """
    path = sqlite_path(url)
    if path is not None:
        try:
            handle = open(f"{path}.lock", "w")
        except OSError as error:
            raise UsageError(f"cannot create the lock file {path}.lock of the storage {url!r} ({error.strerror}); "
                             f"give a storage in a folder you can write to") from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        connection = engine.connect()
    except sqlalchemy.exc.OperationalError as error:
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


def open_storage(url):
    """An RDB storage with heartbeats, whose stale trials get a copy enqueued. Call it under study_lock."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=processes.heartbeat_seconds(),
                          grace_period=processes.grace_seconds(), heartbeat_stale_trial_callback=_requeue_stale)
    except UsageError:
        raise
    except Exception as error:  # sqlalchemy raises many kinds for a bad URL or an unreachable server
        raise UsageError(f"cannot open the storage {redact(url)}: {first_line(error)}") from None


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


def running_pids(url, name):
    """Pids of the workers that have a RUNNING trial in study ``name``."""
    return {int(t.system_attrs[WORKER_ATTR].split(":")[1]) for t in read_trials(url, name)
            if t.state == TrialState.RUNNING and WORKER_ATTR in t.system_attrs}


def url_of(study):
    """The storage URL of a study opened with :func:`open_storage`."""
    return getattr(study._storage, "_backend", study._storage).url


def finished_trials(study):
    """Trials that count as done: completed, pruned, or failed for a reason of their own (e.g. diverged)."""
    return [t for t in study.get_trials(deepcopy=False) if is_final(t)]


def next_trials(study, config):
    """Claim the next population of trials for this process; [] when nothing is left to start.

    Runs under :func:`study_lock`: WAITING trials (enqueued points,
    copies of dead workers' trials) are claimed first; an adaptive sampler is
    then asked for as many new trials as the study still lacks.
    """
    limit = config.study.trials_per_population
    with study_lock(url_of(study)):
        claimed = claim_waiting(study, limit)
        if config.study.sampler in ("random", "grid"):
            return claimed
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) - len(claimed)
        missing = config.study.n_trials - len(finished_trials(study)) - running - len(claimed)
        return claimed + ask(study, max(0, min(limit - len(claimed), missing)))


def others_running(study):
    """Trials running anywhere, in this process or in other workers."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def enqueue_missing(study, entries):
    """Enqueue the entries slot -> (params, user attrs) whose slot has no trial yet; returns how many.

    Call it under study_lock.
    """
    slots = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    missing = [(slot, entry) for slot, entry in sorted(entries.items()) if slot not in slots]
    for slot, (params, user_attrs) in missing:
        study.enqueue_trial(params, user_attrs={SLOT: slot, **user_attrs})
    return len(missing)


def recover_dead_workers(study):
    """Fail the running trials of dead workers and enqueue a copy of each; give every slot left without a
    live or final trial its copy.

    A worker on this machine is dead when its process is gone, a worker
    elsewhere when its heartbeat is older than the grace period; a trial that
    was claimed but never owned (its worker died in between) when it started
    longer ago than the grace period (only an asked trial can be, and only
    when its worker died between asking and marking it).
    """
    grace = processes.grace_seconds()
    with study_lock(url_of(study)):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.system_attrs.get(WORKER_ATTR)
            if worker is None:
                started = trial.datetime_start or datetime.now()
                dead = (datetime.now() - started).total_seconds() > grace
            else:
                dead = processes.alive(worker) is False
            if dead:
                _fail(study, trial, f"worker {worker or '(unknown)'} died")
        optuna.storages.fail_stale_trials(study)  # other hosts; calls _requeue_stale
        # A worker killed between failing a trial and enqueueing its copy left a slot without either.
        by_slot = {}
        for trial in study.get_trials(deepcopy=False):
            by_slot.setdefault(trial.user_attrs.get(SLOT), []).append(trial)
        for slot, trials in by_slot.items():
            if slot is not None and not any(is_live(t) or is_final(t) for t in trials):
                _requeue(study, max(trials, key=lambda t: t.number))


def claim_waiting(study, limit):
    """Claim up to ``limit`` WAITING trials for this process; returns optuna Trials. Call it under study_lock.

    The trial is marked as this worker's, with a first heartbeat, before it
    turns RUNNING, so that a running trial always names its worker.
    """
    storage = study._storage
    claimed = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if len(claimed) == limit:
            break
        try:
            _mark(storage, frozen._trial_id)
            if storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                claimed.append(optuna.trial.Trial(study, frozen._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return claimed


def ask(study, n):
    """Ask the sampler for ``n`` new trials (adaptive samplers), owned by this process. Call it under study_lock."""
    trials = []
    for _ in range(n):
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, SLOT, trial.number)
        _mark(study._storage, trial._trial_id)
        trials.append(trial)
    return trials


def give_back(study, trials):
    """Fail the trials this process cannot finish (e.g. on Ctrl-C) and enqueue them again.

    Trials already finished are left alone. Ctrl-C and SIGTERM are ignored
    meanwhile, so that a second one does not leave a trial half given back.
    """
    with workers.no_interrupt(), study_lock(url_of(study)):
        for trial in trials:
            frozen = study._storage.get_trial(trial._trial_id)
            if frozen.state == TrialState.RUNNING:
                _fail(study, frozen, INTERRUPTED)


def is_live(frozen):
    """Whether a trial may still produce a result: waiting or running."""
    return frozen.state in (TrialState.WAITING, TrialState.RUNNING)


def is_final(frozen):
    """Whether a trial is the result of its slot: completed, pruned, or failed for a reason of its own."""
    return (frozen.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (frozen.state == TrialState.FAIL and bool(frozen.user_attrs.get("final_failure"))))


def deaths(study, slot):
    """How many trials of ``slot`` were lost with their worker."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.user_attrs.get(SLOT) == slot and not t.user_attrs.get("final_failure")
               and t.user_attrs.get("reason") != INTERRUPTED)


class Heartbeat:
    """Beats for the given trials in a background thread while they run."""

    def __init__(self, study, trials):
        self._storage = study._storage
        self._ids = [t._trial_id for t in trials]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clrsearch-heartbeat", daemon=True)
        self._seconds = processes.heartbeat_seconds()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self._seconds):
            for trial_id in self._ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # a missed beat is retried at the next interval
                    pass


def _mark(storage, trial_id):
    """Name this process as the trial's worker and beat once."""
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, processes.identity())
    storage.record_heartbeat(trial_id)


def _fail(study, frozen, reason):
    """Fail a running trial with ``reason`` and enqueue a copy of its slot."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(frozen._trial_id, "reason", reason)
        if not storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    _requeue(study, storage.get_trial(frozen._trial_id))


def _requeue_stale(study, frozen):
    """Optuna's heartbeat-stale callback: ``fail_stale_trials`` has failed ``frozen``; runs under study_lock."""
    _requeue(study, frozen)


def _requeue(study, frozen):
    """Enqueue a copy of a failed trial's slot, with the same lambda, unless the slot has a live or final trial."""
    slot = frozen.user_attrs.get(SLOT)
    params = dict(frozen.params) or dict(frozen.system_attrs.get("fixed_params") or {})
    if slot is None or not params:
        return  # an asked trial that died before it drew its lambda: the sampler asks again
    same_slot = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SLOT) == slot]
    if any(is_live(t) or is_final(t) for t in same_slot):
        return
    if deaths(study, slot) > WORKER_TIMING.max_deaths:
        return
    carried = {key: frozen.user_attrs[key] for key in (POINT, ROUND, NEW_REPLICATES) if key in frozen.user_attrs}
    study.enqueue_trial(params, user_attrs={SLOT: slot, **carried, "retry_of": frozen.number})
