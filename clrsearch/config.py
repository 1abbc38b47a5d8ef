"""Configurations as frozen dataclasses: every default written once, with its unit.

Variants are made with ``dataclasses.replace`` and logged with ``asdict``.
Invalid values raise :class:`UsageError` when the config is built, so that a
bad flag or TOML field fails before any data is read or any run is created.
"""

import itertools
import math
from dataclasses import asdict, dataclass, field, replace

from .errors import UsageError, redact
from .nn.schedule import MODES

DTYPES = ("float32", "float64")
SPLITS = ("batch1", "full")
AUGMENTATIONS = ("none", "flip")  # "flip": each training image mirrored left-right with probability 1/2


@dataclass(frozen=True)
class DataConfig:
    """Which CIFAR-10 images train, validate and test."""

    split: str = "batch1"  # "batch1" or "full" (SPEC, Data)
    val_size: int = 5000  # images held out of the five training batches ("full" only)
    split_seed: int = 0  # seed of the "full" hold-out permutation
    n_train: int | None = None  # keep only the first n_train training images (None: all)
    data_dir: str | None = None  # folder or its parent, set by the command: --data-dir, $CLRSEARCH_DATA or the cache

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
    augment: str = "none"  # none | flip (mirror each image of a mini-batch left-right with probability 1/2)

    def __post_init__(self):
        for name in ("n_batch", "cycles", "n_s", "hidden"):
            _check_int(getattr(self, name), name, minimum=1)
        _check_int(self.shuffle_seed, "shuffle_seed", minimum=0)
        _check_float(self.eta_min, "eta_min", minimum=0.0)
        _check_float(self.eta_max, "eta_max", minimum=0.0)
        _check(self.eta_min < self.eta_max,
               f"eta_min ({self.eta_min:g}) must be smaller than eta_max ({self.eta_max:g})")
        _check(self.clr_mode in MODES, f"clr_mode must be one of {', '.join(MODES)}, not {self.clr_mode!r}")
        _check_float(self.gamma, "gamma", minimum=0.0)
        _check(0 < self.gamma <= 1, f"gamma must be in (0, 1], not {self.gamma:g}")
        _check(self.dtype in DTYPES, f"dtype must be float32 or float64, not {self.dtype!r}")
        for name in ("evals_per_cycle", "eval_train_size", "max_steps"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, minimum=1)
        _check(self.augment in AUGMENTATIONS,
               f"augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")

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
KINDS = ("coarse", "fine")
REPLICATES = ("blocks", "paired", "init")
RACE_RULES = ("kn", "holm")  # kn: KN screening and an MCB stop (search/decision.py); holm: Holm-corrected t-tests
GRID_DIMENSIONS = ("lam", "n_s", "n_s_epochs", "cycles", "augment")  # n_s_epochs: n_s = k * floor(n / n_batch)
DEFAULT_STORAGE = "sqlite:///studies/clrsearch.db"  # Optuna storage of a study that names none


@dataclass(frozen=True)
class StudyConfig:
    """An Optuna study over lambda (and, in the fine grid, the schedule): which points, how many replicates,
    how they are compared, where the study is stored, and the final model of a fine study."""

    kind: str = "coarse"  # coarse (random or TPE over a log range) or fine (grid)
    name: str = "coarse"  # Optuna study name; rerunning the same name resumes it
    storage: str | None = None  # Optuna storage URL (None: DEFAULT_STORAGE)
    sampler: str = "random"  # random | tpe | grid
    seed: int = 0  # sampler seed: the same seed draws the same lambdas
    n_trials: int = 10  # lambda values tried (coarse)
    n_seeds: int = 3  # replicates per trial (the first round of a race)
    first_seed: int = 0  # replicate r starts from init seed first_seed + r
    replicates: str = "blocks"  # blocks: replicate r also fixes the mini-batch order and the validation fold
    #                             (split "full"); paired: the order only, one fixed split; init: init seeds only
    alpha: float = 0.05  # error rate of the race's decision, the MCB intervals and the Holm-corrected tests
    lam_min: float = 1e-5  # coarse range, sampled log-uniformly
    lam_max: float = 1e-1
    grid: tuple = ()  # fine: (dimension, values) pairs, e.g. (("lam", (0, 0.001)), ("n_s_epochs", (2, 4)));
    #                   a plain tuple of numbers is a lambda grid; no "lam" dimension: lambda derived from coarse
    grid_points: int = 8  # fine: lambda values of a derived grid
    coarse_study: str = "coarse"  # fine: the study a derived grid comes from
    race: bool = True  # fine: more replicates for the points tied with the best, round by round
    race_seeds: int = 3  # fine: replicates added per race round
    max_seeds: int = 12  # fine: replicates of a point at which the race stops (docs/RESULTS.md: why 12)
    race_rule: str = "kn"  # fine: kn (KN screening, MCB stop) | holm (Holm-corrected t-tests vs the best)
    delta: float = 0.003  # fine: indifference zone of the race, accuracy as a fraction (--delta takes points)
    trials_per_population: int = 10  # trials trained together as one population
    pruner: str = "none"  # none | median | hyperband, on validation accuracy at each cycle end
    experiment: str = "clrsearch"  # MLflow experiment
    final: bool = True  # fine: train, log and register the final model
    final_seeds: int = 5  # fine: networks of the final model (replicates 0, 1, ...), registered as their ensemble
    final_val_size: int = 1000  # fine: validation images held out of the final model's training set
    final_extra_cycles: int = 1  # fine: cycles the final model trains beyond the winning point's
    promote: bool = False  # fine: the final model becomes champion even when it is less accurate than the champion

    def __post_init__(self):
        _check(self.kind in KINDS, f"kind must be coarse or fine, not {self.kind!r}")
        _check(isinstance(self.name, str) and self.name.strip() != "", "study name must be a non-empty string")
        _check(self.storage is None or isinstance(self.storage, str), "storage must be a URL string")
        _check(self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}")
        _check(self.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, not {self.pruner!r}")
        _check(self.replicates in REPLICATES,
               f"replicates must be one of {', '.join(REPLICATES)}, not {self.replicates!r}")
        for name in ("seed", "first_seed", "final_extra_cycles"):
            _check_int(getattr(self, name), name, minimum=0)
        for name in ("n_trials", "n_seeds", "grid_points", "trials_per_population", "race_seeds", "max_seeds",
                     "final_seeds", "final_val_size"):
            _check_int(getattr(self, name), name, minimum=1)
        _check_float(self.alpha, "alpha", minimum=0.0)
        _check(0 < self.alpha < 1, f"alpha must be in (0, 1), not {self.alpha:g}")
        check_lam(self.lam_min)
        check_lam(self.lam_max)
        _check(0 < self.lam_min < self.lam_max,
               f"lam_min ({self.lam_min:g}) must be > 0 and smaller than lam_max ({self.lam_max:g})")
        object.__setattr__(self, "grid", _grid_pairs(self.grid))
        _check(isinstance(self.experiment, str) and self.experiment.strip() != "",
               "experiment must be a non-empty string")
        _check(self.sampler != "grid" or self.kind == "fine", "the grid sampler belongs to the fine study")
        _check(self.kind != "fine" or self.sampler == "grid", "the fine study uses the grid sampler")
        for name in ("final", "race", "promote"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false")
        _check(self.race_rule in RACE_RULES, f"race_rule must be one of {', '.join(RACE_RULES)}, not {self.race_rule!r}")
        _check_float(self.delta, "delta", minimum=0.0)
        _check(0 < self.delta < 1, f"delta must be in (0, 1) as a fraction, not {self.delta:g}")
        _check(self.kind != "fine" or not self.race or self.race_rule != "kn" or self.n_seeds >= 2,
               "the kn race needs n_seeds >= 2 first-round replicates (their variance)")

    @property
    def seeds(self):
        """Init seeds of the first round's replicates 0 .. n_seeds - 1."""
        return tuple(range(self.first_seed, self.first_seed + self.n_seeds))

    @property
    def grid_dimensions(self):
        """The fine grid as a dict dimension -> values, in the order given."""
        return dict(self.grid)

    @property
    def points(self):
        """Every point of the grid as a dict dimension -> value, the first dimension varying slowest."""
        names = [name for name, _ in self.grid]
        return [dict(zip(names, values)) for values in itertools.product(*(values for _, values in self.grid))]

    @property
    def total_trials(self):
        """Trials of the first round: one per grid point (fine, grid resolved), else ``n_trials``."""
        return len(self.points) if self.kind == "fine" else self.n_trials


def _grid_pairs(grid):
    """``grid`` as a tuple of (dimension, values) pairs, checked; a tuple of numbers is a lambda grid."""
    _check(isinstance(grid, tuple), "grid must be a list of numbers or a table of dimensions")
    if grid and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in grid):
        grid = (("lam", grid),)
    pairs = []
    for item in grid:
        _check(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str),
               f"grid must be a list of numbers or (dimension, values) pairs, not {item!r}")
        name, values = item[0], tuple(item[1]) if isinstance(item[1], (tuple, list)) else (item[1],)
        _check(name in GRID_DIMENSIONS,
               f"grid dimension {name!r} is not one of {', '.join(GRID_DIMENSIONS)}")
        _check(len(values) > 0, f"grid dimension {name} has no values")
        _check(len(set(values)) == len(values), f"grid values of {name} must be distinct")
        for value in values:
            _check_grid_value(name, value)
        pairs.append((name, values))
    names = [name for name, _ in pairs]
    _check(len(set(names)) == len(names), "each grid dimension may be given once")
    _check(not ("n_s" in names and "n_s_epochs" in names), "give the half cycle as n_s or as n_s_epochs, not both")
    return tuple(pairs)


def _check_grid_value(name, value):
    if name == "lam":
        check_lam(value)
    elif name == "augment":
        _check(value in AUGMENTATIONS, f"augment must be one of {', '.join(AUGMENTATIONS)}, not {value!r}")
    else:
        _check_int(value, name, minimum=1)


@dataclass(frozen=True)
class WorkerTiming:
    """How workers sharing a study tell each other they are alive, in seconds.

    A study command sets the first two from ``$CLRSEARCH_HEARTBEAT_SECONDS``
    and ``$CLRSEARCH_GRACE_SECONDS`` (see :mod:`clrsearch.processes`), and
    ``outage_seconds`` from ``--outage-seconds`` (see :mod:`clrsearch.outages`).
    """

    heartbeat_seconds: float = 5.0  # how often a running trial and a study's MLflow run say they are alive
    grace_seconds: float = 20.0  # silence after which a worker on another host is taken for dead
    stop_seconds: float = 30.0  # a helper's time to give its trials back after SIGINT, before SIGKILL
    max_deaths: int = 5  # copies enqueued for a slot whose workers died
    outage_seconds: float = 300.0  # how long a study waits for its storage or tracking server (--outage-seconds)


WORKER_TIMING = WorkerTiming()


@dataclass(frozen=True)
class SearchConfig:
    """Everything a coarse or fine search needs; what ``studies/*.toml`` holds (``timing`` aside: the
    command sets it from the environment, and it is neither a table of the definition nor logged)."""

    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    timing: WorkerTiming = WORKER_TIMING


SECTIONS = ("study", "data", "train")  # the tables of a study definition, the fields of SearchConfig


def flat_params(config: SearchConfig) -> dict:
    """The whole config as one flat dict, e.g. {"train.n_s": 900, ...}, for logging."""
    flat = {}
    for section in SECTIONS:
        for name, value in asdict(getattr(config, section)).items():
            value = _flat(value)
            flat[f"{section}.{name}"] = redact(value) if isinstance(value, str) else value  # no password logged
    return flat


def _flat(value):
    """A config value as logged: tuples of numbers as 0,0.001; a grid as lam=0,0.001;n_s_epochs=2,4."""
    if not isinstance(value, tuple):
        return value
    if value and isinstance(value[0], tuple):
        return ";".join(f"{name}={_flat(values)}" for name, values in value)
    return ",".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in value)


# The search protocol of SPEC: 45,000 training / 5,000 validation images,
# n_batch 100, 2 cycles of n_s = 2 * floor(45000 / 100) = 900 steps.
_SEARCH_DATA = DataConfig(split="full", val_size=5000, split_seed=0)
_SEARCH_TRAIN = TrainConfig(n_batch=100, cycles=2, n_s=900, eta_min=1e-5, eta_max=1e-1,
                            evals_per_cycle=4, eval_train_size=5000)
DEFAULT_SEARCH = {
    "coarse": SearchConfig(StudyConfig(kind="coarse", name="coarse", sampler="random", n_trials=10,
                                       trials_per_population=10), _SEARCH_DATA, _SEARCH_TRAIN),
    "fine": SearchConfig(StudyConfig(kind="fine", name="fine", sampler="grid", trials_per_population=16,
                                     grid=(("n_s_epochs", (2, 4)),)),
                         _SEARCH_DATA, replace(_SEARCH_TRAIN, augment="flip")),
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
