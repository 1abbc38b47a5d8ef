"""The runs' dataset inputs (clrsearch.tracking.datasets): names, digests worked out from the files' md5s
and the split parameters, and what a study run, its trial and seed runs hold in a temporary MLflow store."""

import hashlib
import json

import pytest

from clrsearch import tracking
from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from clrsearch.tracking import datasets
from helpers import write_tiny_cifar

TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def expected_digest(folder, files, **fields):
    """The documented digest: SHA-256 of the files' md5s and the split parameters, as sorted JSON, 10 digits."""
    key = {"files": {name: md5_of(folder / name) for name in files}, **fields}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=50)


def test_full_split_sets_are_named_by_split_and_size_and_digest_their_files_and_parameters(folder):
    data = DataConfig("full", val_size=120, split_seed=3, n_train=300, data_dir=str(folder))
    inputs = datasets.describe_splits(load_splits(data), data)
    train_set, val_set, test_set = inputs.training, inputs.validation, inputs.testing
    assert (train_set.name, val_set.name, test_set.name) == ("cifar10-full-train-300", "cifar10-full-val-120",
                                                             "cifar10-test-50")
    assert (train_set.n_images, val_set.n_images, test_set.n_images) == (300, 120, 50)
    assert (train_set.context, val_set.context, test_set.context) == ("training", "validation", "testing")
    assert {train_set.source, val_set.source, test_set.source} == {str(folder)}
    picks = {"split": "full", "val_size": 120, "split_seed": 3}
    assert train_set.digest == expected_digest(folder, TRAIN_FILES, set="train", n_train=300, **picks)
    assert val_set.digest == expected_digest(folder, TRAIN_FILES, set="val", **picks)
    assert test_set.digest == expected_digest(folder, ["test_batch"], set="test")


def test_batch1_trains_on_the_first_batch_and_validates_on_the_second(folder):
    data = DataConfig("batch1", data_dir=str(folder))
    inputs = datasets.describe_splits(load_splits(data), data)
    assert inputs.training.name == "cifar10-batch1-train-100" and inputs.training.files == ("data_batch_1",)
    assert inputs.validation.name == "cifar10-batch1-val-100" and inputs.validation.files == ("data_batch_2",)
    assert inputs.training.digest == expected_digest(folder, ["data_batch_1"], set="train", split="batch1",
                                                     n_train=None)


def test_other_images_other_digests_the_same_test_set_one_digest(folder):
    def describe(**fields):
        data = DataConfig("full", data_dir=str(folder), **{"val_size": 100, **fields})
        return datasets.describe_splits(load_splits(data), data)

    base, reseeded, again = describe(), describe(split_seed=1), describe()
    assert base == again
    assert base.training.digest != reseeded.training.digest and base.validation.digest != reseeded.validation.digest
    assert base.testing == reseeded.testing
    assert describe(val_size=200).validation.name == "cifar10-full-val-200"


def test_the_md5_manifest_is_used_when_it_lists_the_files(tmp_path):
    folder = write_tiny_cifar(tmp_path, n_per_batch=50, n_test=20)
    data = DataConfig("batch1", data_dir=str(folder))
    splits = load_splits(data)
    computed = datasets.describe_splits(splits, data)
    (folder / "clrsearch-md5.json").write_text(json.dumps({"test_batch": "0" * 32}))
    listed = datasets.describe_splits(splits, data)
    key = json.dumps({"files": {"test_batch": "0" * 32}, "set": "test"}, sort_keys=True)
    assert listed.testing.digest == hashlib.sha256(key.encode()).hexdigest()[:10] != computed.testing.digest
    assert listed.training == computed.training  # not in the manifest: its own md5


def test_a_dataset_input_carries_name_digest_source_context_schema_and_size(folder):
    data = DataConfig("batch1", data_dir=str(folder))
    entity = datasets.describe_splits(load_splits(data), data).validation.dataset_input()
    assert [(t.key, t.value) for t in entity.tags] == [("mlflow.data.context", "validation")]
    d = entity.dataset
    assert (d.name, d.source_type, json.loads(d.source)) == ("cifar10-batch1-val-100", "local", {"uri": str(folder)})
    assert json.loads(d.profile)["num_rows"] == 100
    spec = json.loads(d.schema)["mlflow_tensorspec"]
    assert json.loads(spec["features"]) == [{"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": [-1, 3072]},
                                             "name": "image"}]


def test_a_study_run_and_its_trial_and_seed_runs_hold_the_training_and_validation_sets(store, folder):
    data = DataConfig("batch1", data_dir=str(folder))
    splits = load_splits(data)
    inputs = datasets.describe_splits(splits, data)
    result = train(splits, TrainConfig(n_batch=20, cycles=1, n_s=5, hidden=8), [0.01], [1])
    seed = tracking.SeedRecord(seed=0, val_accuracy=0.3, history=result.history, member=0, val_true=splits.val.y,
                               val_pred=network.predict(result.params, splits.val.X)[0],
                               class_names=splits.label_names, status="finished")
    trial = tracking.TrialRecord(number=0, lam=0.01, state="COMPLETE", mean=0.3, std=0.0, seeds=[seed])
    with tracking.StudyRun("datasets", "coarse:tiny", {}, {"study_name": "tiny"}, inputs=inputs) as study:
        trial_id = study.log_trials([trial])[0]
    seed_run = store.search_runs([study.experiment_id], f"tags.`mlflow.parentRunId` = '{trial_id}'")[0]
    for run_id in (study.run_id, trial_id, seed_run.info.run_id):
        logged = store.get_run(run_id).inputs.dataset_inputs
        found = {(i.dataset.name, i.dataset.digest): [t.value for t in i.tags] for i in logged}
        assert found == {(inputs.training.name, inputs.training.digest): ["training"],
                         (inputs.validation.name, inputs.validation.digest): ["validation"]}
