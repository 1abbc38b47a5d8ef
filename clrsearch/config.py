"""Configurations as frozen dataclasses: every default written once, with its unit.

Variants are made with ``dataclasses.replace`` and logged with ``asdict``.
Invalid values raise :class:`UsageError` when the config is built, so that a
bad flag or TOML field fails before any data is read or any run is created.
"""

import math
from dataclasses import asdict, dataclass, field

from .errors import UsageError
from .nn.schedule import MODES

DTYPES = ("float32", "float64")
SPLITS = ("batch1", "full")


@dataclass(frozen=True)
class DataConfig:
    """Which CIFAR-10 images train, validate and test."""

    split: str = "batch1"  # "batch1" or "full" (SPEC, Data)
    val_size: int = 5000  # images held out of the five training batches ("full" only)
    split_seed: int = 0  # seed of the "full" hold-out permutation
    n_train: int | None = None  # keep only the first n_train training images (None: all)
    data_dir: str | None = None  # None: $CLRSEARCH_DATA, else the per-user cache

    def __post_init__(self):
        _check(self.split in SPLITS, f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        _check_int(self.val_size, "val_size", minimum=1)
        _check_int(self.split_seed, "split_seed", minimum=0)
        if self.n_train is not None:
            _check_int(self.n_train, "n_train", minimum=1)


@dataclass(frozen=True)
class TrainConfig:
    """Mini-batch gradient descent under a cyclical learning rate (SPEC)."""

    n_batch: int = 100  # images per update step
    cycles: int = 1  # training stops after 2 * n_s * cycles update steps
    n_s: int = 500  # half a cycle, in update steps
    eta_min: float = 1e-5  # learning rate at the cycle ends
    eta_max: float = 1e-1  # learning rate at the top of the first cycle
    clr_mode: str = "triangular"  # triangular | triangular2 | exp_range
    gamma: float = 1.0  # per-step amplitude decay of exp_range
    hidden: int = 50  # hidden units M
    dtype: str = "float32"  # float32 or float64
    shuffle_seed: int = 0  # seed of the per-epoch mini-batch order, shared by a population
    evals_per_cycle: int | None = None  # evaluation points per cycle (None: one per epoch)
    eval_train_size: int | None = None  # training images used for the training curves (None: all)
    snapshots: bool = False  # keep the networks at the end of every cycle
    max_steps: int | None = None  # stop after this many update steps (None: 2 * n_s * cycles)

    def __post_init__(self):
        _check_int(self.n_batch, "n_batch", minimum=1)
        _check_int(self.cycles, "cycles", minimum=1)
        _check_int(self.n_s, "n_s", minimum=1)
        _check_int(self.hidden, "hidden", minimum=1)
        _check_int(self.shuffle_seed, "shuffle_seed", minimum=0)
        _check_float(self.eta_min, "eta_min", minimum=0.0)
        _check_float(self.eta_max, "eta_max", minimum=0.0)
        _check(self.eta_min < self.eta_max,
               f"eta_min ({self.eta_min:g}) must be smaller than eta_max ({self.eta_max:g})")
        _check(self.clr_mode in MODES, f"clr_mode must be one of {', '.join(MODES)}, not {self.clr_mode!r}")
        _check_float(self.gamma, "gamma", minimum=0.0)
        _check(0 < self.gamma <= 1, f"gamma must be in (0, 1], not {self.gamma:g}")
        _check(self.dtype in DTYPES, f"dtype must be float32 or float64, not {self.dtype!r}")
        if self.evals_per_cycle is not None:
            _check_int(self.evals_per_cycle, "evals_per_cycle", minimum=1)
        if self.eval_train_size is not None:
            _check_int(self.eval_train_size, "eval_train_size", minimum=1)
        if self.max_steps is not None:
            _check_int(self.max_steps, "max_steps", minimum=1)

    def check_fits(self, n_train):
        """Raise UsageError unless a mini-batch fits in a training set of ``n_train`` images."""
        _check(self.n_batch <= n_train, f"n_batch ({self.n_batch}) is larger than the training set ({n_train} images)")

    @property
    def total_steps(self):
        """Update steps in the whole run: 2 * n_s * cycles, or max_steps when that is set."""
        return 2 * self.n_s * self.cycles if self.max_steps is None else self.max_steps


@dataclass(frozen=True)
class Experiment:
    """One training run of the ``train`` command: data, protocol, lambda and seed."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lam: float = 0.01  # L2 strength lambda
    seed: int = 0  # seed of the initial weights

    def __post_init__(self):
        check_lam(self.lam)
        _check_int(self.seed, "seed", minimum=0)


def check_lam(lam):
    """Raise UsageError unless lambda is a finite number >= 0."""
    _check_float(lam, "lambda", minimum=0.0)


def _check(ok, message):
    if not ok:
        raise UsageError(message)


def _check_int(value, name, minimum):
    _check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer, not {value!r}")
    _check(value >= minimum, f"{name} must be >= {minimum}, not {value}")


def _check_float(value, name, minimum):
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{name} must be a number, not {value!r}")
    _check(math.isfinite(value) and value >= minimum, f"{name} must be a finite number >= {minimum:g}, not {value}")


PRESETS = {
    # 100 training images, no regularisation: the network must overfit them.
    "sanity": Experiment(DataConfig("batch1", n_train=100), TrainConfig(n_batch=10, cycles=2, n_s=500), lam=0.0),
    # SPEC figure 3 and figure 4 (original report: 46.01% and 47.29% test accuracy).
    "fig3": Experiment(DataConfig("batch1"), TrainConfig(n_batch=100, cycles=1, n_s=500), lam=0.01),
    "fig4": Experiment(DataConfig("batch1"), TrainConfig(n_batch=100, cycles=3, n_s=800), lam=0.01),
    # The best network of the report: 45,000 training images, 3 cycles, lambda from the fine search.
    "best": Experiment(DataConfig("full", val_size=5000), TrainConfig(n_batch=100, cycles=3, n_s=900), lam=0.001),
}


SAMPLERS = ("random", "tpe", "grid")
PRUNERS = ("none", "median", "hyperband")
MEDIAN_STARTUP_TRIALS = 3  # finished trials the median pruner waits for before it prunes
KINDS = ("coarse", "fine")


@dataclass(frozen=True)
class StudyConfig:
    """An Optuna study over lambda: which values, how many seeds, where it is stored."""

    kind: str = "coarse"  # coarse (random or TPE over a log range) or fine (grid)
    name: str = "coarse"  # Optuna study name; rerunning the same name resumes it
    storage: str | None = None  # Optuna storage URL (None: sqlite:///studies/clrsearch.db)
    sampler: str = "random"  # random | tpe | grid
    seed: int = 0  # sampler seed: the same seed draws the same lambdas
    n_trials: int = 10  # lambda values tried (coarse)
    n_seeds: int = 3  # networks trained per lambda, init seeds first_seed, first_seed + 1, ...
    first_seed: int = 0
    lam_min: float = 1e-5  # coarse range, sampled log-uniformly
    lam_max: float = 1e-1
    grid: tuple = ()  # fine: lambda values; empty: derived from the coarse study
    grid_points: int = 8  # fine: size of a derived grid
    coarse_study: str = "coarse"  # fine: the study a derived grid comes from
    trials_per_population: int = 10  # trials trained together as one population
    pruner: str = "none"  # none | median | hyperband, on validation accuracy at each cycle end
    experiment: str = "clrsearch"  # MLflow experiment
    final_cycles: int = 3  # fine: cycles of the final model
    final: bool = True  # fine: train, log and register the final model
    ensemble: bool = False  # fine: register the snapshot ensemble of the final run

    def __post_init__(self):
        _check(self.kind in KINDS, f"kind must be coarse or fine, not {self.kind!r}")
        _check(isinstance(self.name, str) and self.name.strip() != "", "study name must be a non-empty string")
        _check(self.storage is None or isinstance(self.storage, str), "storage must be a URL string")
        _check(self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        _check(self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}")
        for name in ("seed", "first_seed"):
            _check_int(getattr(self, name), name, minimum=0)
        for name in ("n_trials", "n_seeds", "grid_points", "trials_per_population", "final_cycles"):
            _check_int(getattr(self, name), name, minimum=1)
        check_lam(self.lam_min)
        check_lam(self.lam_max)
        _check(0 < self.lam_min < self.lam_max,
               f"lam_min ({self.lam_min:g}) must be > 0 and smaller than lam_max ({self.lam_max:g})")
        _check(isinstance(self.grid, tuple), "grid must be a list of numbers")
        for lam in self.grid:
            check_lam(lam)
        _check(len(set(self.grid)) == len(self.grid), "grid values must be distinct")
        _check(isinstance(self.experiment, str) and self.experiment.strip() != "",
               "experiment must be a non-empty string")
        _check(self.sampler != "grid" or self.kind == "fine", "the grid sampler belongs to the fine study")
        _check(self.kind != "fine" or self.sampler == "grid", "the fine study uses the grid sampler")
        _check(isinstance(self.final, bool) and isinstance(self.ensemble, bool), "final and ensemble must be true or false")

    @property
    def seeds(self):
        """Init seeds of the networks of every trial."""
        return tuple(range(self.first_seed, self.first_seed + self.n_seeds))

    @property
    def total_trials(self):
        """Trials the study holds when done: one per grid point (fine, grid resolved), else ``n_trials``."""
        return len(self.grid) if self.kind == "fine" else self.n_trials


@dataclass(frozen=True)
class SearchConfig:
    """Everything a coarse or fine search needs; what ``studies/*.toml`` holds."""

    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("study", "data", "train")  # the tables of a study definition, the fields of SearchConfig


def flat_params(config: SearchConfig) -> dict:
    """The whole config as one flat dict, e.g. {"train.n_s": 900, ...}, for logging."""
    flat = {}
    for section in SECTIONS:
        for name, value in asdict(getattr(config, section)).items():
            flat[f"{section}.{name}"] = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else value
    return flat


# The search protocol of SPEC: 45,000 training / 5,000 validation images,
# n_batch 100, 2 cycles of n_s = 2 * floor(45000 / 100) = 900 steps.
_SEARCH_DATA = DataConfig(split="full", val_size=5000, split_seed=0)
_SEARCH_TRAIN = TrainConfig(n_batch=100, cycles=2, n_s=900, eta_min=1e-5, eta_max=1e-1,
                            evals_per_cycle=4, eval_train_size=5000)
DEFAULT_SEARCH = {
    "coarse": SearchConfig(StudyConfig(kind="coarse", name="coarse", sampler="random", n_trials=10,
                                       trials_per_population=10), _SEARCH_DATA, _SEARCH_TRAIN),
    "fine": SearchConfig(StudyConfig(kind="fine", name="fine", sampler="grid", trials_per_population=8),
                         _SEARCH_DATA, _SEARCH_TRAIN),
}


@dataclass(frozen=True)
class RangeTest:
    """An LR range test (Smith 2015, section 3.3): eta rises linearly once while validation accuracy is measured."""

    eta_low: float = 1e-5  # eta at the first update
    eta_high: float = 0.3  # eta at the last update
    epochs: int = 4  # length of the ramp
    points: int = 40  # evaluation points along the ramp
    lam: float = 0.001
    n_seeds: int = 3  # networks trained together; their mean accuracy is used
    rise: float = 0.1  # eta_min: first point above start + rise * (peak - start)
    smooth: int = 5  # points in the moving average of the accuracy


RANGE_TEST_DATA = DataConfig(split="full", val_size=5000)  # the data of python -m clrsearch.lrrange


@dataclass(frozen=True)
class WorkerTiming:
    """How workers sharing a study tell each other they are alive, in seconds.

    ``$CLRSEARCH_HEARTBEAT_SECONDS`` and ``$CLRSEARCH_GRACE_SECONDS`` override
    the first two (see :mod:`clrsearch.processes`).
    """

    heartbeat_seconds: float = 5.0  # how often a running trial and a study's MLflow run say they are alive
    grace_seconds: float = 20.0  # silence after which a worker on another host is taken for dead
    stop_seconds: float = 30.0  # a helper's time to give its trials back after SIGINT, before SIGKILL
    max_deaths: int = 5  # copies enqueued for a slot whose workers died


WORKER_TIMING = WorkerTiming()
