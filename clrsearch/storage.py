"""Where studies live and how workers share them safely.

A study is an Optuna study in an RDB storage (SQLite by default, PostgreSQL to
share it between machines). The lambdas of random and grid studies are
enqueued once, up front, as WAITING trials; workers claim them one by one
with Optuna's atomic WAITING -> RUNNING transition, so no point is ever
handed to two workers. Running trials beat a heartbeat; a trial whose worker
died is failed (at once when the worker was on this machine, otherwise after
the grace period) and a copy with the same lambda is enqueued again.
"""

import contextlib
import fcntl
import os
import socket
import threading
import warnings
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .errors import UsageError

DEFAULT_STORAGE = "sqlite:///studies/clrsearch.db"
SCHEMES = ("sqlite", "postgresql", "mysql")
HEARTBEAT_SECONDS = 5  # how often a running trial says it is alive
GRACE_SECONDS = 20  # silence after which another worker fails the trial
MAX_RETRIES = 3  # copies enqueued for a trial whose worker died
WORKER_ATTR = "clrsearch:worker"  # host:pid of the process running a trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Heartbeats and their retry callback are marked experimental in Optuna; they are what makes studies crash-safe.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(url=None):
    """The storage URL to use; relative SQLite paths get their folder created."""
    url = url or DEFAULT_STORAGE
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in SCHEMES or "://" not in url:
        raise UsageError(f"storage {url!r} is not a database URL; use sqlite:///path.db or "
                         f"postgresql://USER@HOST/DB")
    path = sqlite_path(url)
    if path is not None:
        if path.is_dir():
            raise UsageError(f"storage {url!r} names a folder; give a file, e.g. sqlite:///studies/clrsearch.db")
        path.parent.mkdir(parents=True, exist_ok=True)
    return url


def sqlite_path(url):
    """The database file of a sqlite:/// URL, else None."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///"):])


@contextlib.contextmanager
def study_lock(url):
    """Serialise study creation and enqueueing among workers sharing ``url``.

    SQLite: an exclusive lock on a file beside the database. PostgreSQL: a
    session-level advisory lock. Other databases: no lock.
    """
    path = sqlite_path(url)
    if path is not None:
        with open(f"{path}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif url.startswith("postgresql"):
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(20151506)"))
                try:
                    yield
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(20151506)"))
        except sqlalchemy.exc.OperationalError as error:
            raise UsageError(f"cannot reach the storage {url!r}: {_first_line(error)}") from None
        finally:
            engine.dispose()
    else:
        yield


def open_storage(url):
    """An RDB storage with heartbeats, that re-enqueues trials of dead workers."""
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                          grace_period=GRACE_SECONDS,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES))
    except Exception as error:  # sqlalchemy raises many kinds for a bad URL or an unreachable server
        raise UsageError(f"cannot open the storage {url!r}: {_first_line(error)}") from None


def enqueue_missing(study, lams):
    """Enqueue slot k with lambda ``lams[k]`` unless a trial of that slot exists."""
    slots = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False)}
    for slot, lam in enumerate(lams):
        if slot not in slots:
            study.enqueue_trial({"lam": float(lam)}, user_attrs={"slot": slot})


def recover_dead_workers(study):
    """Fail the running trials of dead workers; each gets a copy enqueued again.

    A worker on this machine is dead when its process is gone; a worker
    elsewhere when its heartbeat is older than the grace period.
    """
    storage = study._storage
    here = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(trial.system_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if host == here and pid.isdigit() and not _alive(int(pid)):
            _fail_and_retry(study, trial)
    optuna.storages.fail_stale_trials(study)


def claim_waiting(study, limit):
    """Claim up to ``limit`` WAITING trials for this process; returns optuna Trials."""
    storage = study._storage
    claimed = []
    for frozen in sorted(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number):
        if len(claimed) == limit:
            break
        try:
            if not storage.set_trial_state_values(frozen._trial_id, TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        claimed.append(_own(study, frozen._trial_id))
    return claimed


def ask(study, n):
    """Ask the sampler for ``n`` new trials (adaptive samplers), owned by this process."""
    trials = []
    for _ in range(n):
        trial = study.ask()
        trials.append(_own(study, trial._trial_id, trial))
    return trials


def give_back(study, trial, reason):
    """Fail a trial this process cannot finish and enqueue it again (e.g. on Ctrl-C)."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
    frozen = study._storage.get_trial(trial._trial_id)
    study.tell(trial, state=TrialState.FAIL)
    _retry(study, frozen)


class Heartbeat:
    """Beats for the given trials in a background thread while they run."""

    def __init__(self, study, trials):
        self._storage = study._storage
        self._ids = [t._trial_id for t in trials]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clrsearch-heartbeat", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            for trial_id in self._ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # a missed beat is retried at the next interval
                    pass


def _own(study, trial_id, trial=None):
    storage = study._storage
    storage.set_trial_system_attr(trial_id, WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
    storage.record_heartbeat(trial_id)
    return trial if trial is not None else optuna.trial.Trial(study, trial_id)


def _fail_and_retry(study, frozen):
    try:
        if study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL):
            _retry(study, study._storage.get_trial(frozen._trial_id))
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _retry(study, frozen):
    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, frozen)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
