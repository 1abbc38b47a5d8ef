"""Every MLflow call of clrsearch.

- :mod:`.store`: the tracking store and experiment, checked before a study;
- :mod:`.runs`: a study run as a tree of runs (study, trial, seed);
- :mod:`.registry`: the final model's run, the registered model and its alias;
- :mod:`.verify`: a registered version's files checked against their digests before it is loaded;
- :mod:`.pyfunc`: the registered model itself, raw CIFAR-10 rows in, labels out;
- :mod:`.recovery`: runs left behind by processes that died;
- :mod:`.datasets`: the training, validation and test sets as the runs' dataset inputs;
- :mod:`.single`: the runs of ``train`` and ``gradcheck``;
- :mod:`.artifacts`, :mod:`.client`: curves, confusion matrices and files; writing runs.
"""

from ..confusion import confusion_report
from .datasets import DataInputs, SetInput, describe_block, describe_splits
from .recovery import end_dead_runs, logged_trials
from .registry import (ALIAS, REGISTERED_NAME, FinalModel, aliased_version, log_final_model, run_metrics,
                       version_settled)
from .runs import SeedRecord, StudyRun, TrialRecord, child_runs, latest_study_run, log_range_test
from .single import ExperimentRun, log_experiment_run, log_gradient_check
from .store import EXPERIMENT, check_store, delete_experiment, find_experiment_id, git_commit, source_tags
from .verify import DIGEST_TAG, VerifiedModel, load_verified, verify_model

__all__ = ["ALIAS", "DIGEST_TAG", "EXPERIMENT", "REGISTERED_NAME", "DataInputs", "ExperimentRun", "FinalModel",
           "SeedRecord", "SetInput", "StudyRun", "TrialRecord", "VerifiedModel", "aliased_version", "check_store",
           "child_runs", "confusion_report", "delete_experiment", "describe_block", "describe_splits",
           "end_dead_runs", "find_experiment_id", "git_commit", "latest_study_run", "load_verified",
           "log_experiment_run", "log_final_model", "log_gradient_check", "log_range_test", "logged_trials",
           "run_metrics", "source_tags", "verify_model", "version_settled"]
