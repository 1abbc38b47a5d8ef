"""``python -m clrsearch.evaluate`` (clrsearch.cli.evaluate) on a model registered in a temporary store: the
accuracy and confusion matrix it prints are those computed independently from the
network, and a missing model is one line and exit status 2."""

import json

import numpy as np
import pytest

from clrsearch import evaluate, tracking
from clrsearch.cli import evaluate as cli_evaluate
from clrsearch.config import DataConfig, TrainConfig
from clrsearch.data import load_batch, load_splits
from clrsearch.nn import network
from clrsearch.nn.trainer import train
from helpers import write_tiny_cifar


@pytest.fixture(scope="module")
def champion(store, tmp_path_factory):
    """A registered champion, and the predictions on the test batch computed from its network."""
    folder = write_tiny_cifar(tmp_path_factory.mktemp("data"), n_per_batch=100, n_test=80)
    splits = load_splits(DataConfig("batch1", data_dir=str(folder)))
    result = train(splits, TrainConfig(n_batch=20, cycles=1, n_s=10, hidden=8), [0.01], [3])
    params = network.member(result.params, 0)
    predictions = network.predict(params, splits.test.X)  # (N,)
    raw, labels = load_batch(folder / "test_batch")
    accuracy = float(np.mean(predictions == labels))
    tracking.log_final_model(tracking.FinalModel(
        run_name="final", params={}, history=result.history, member=0, val_accuracy=0.5, test_accuracy=accuracy,
        test_true=labels, test_pred=predictions, class_names=splits.label_names, networks=params,
        normaliser=splits.normaliser, dtype="float32", input_example=raw[:2]), "evaluate")
    return folder, labels, predictions, splits.label_names


@pytest.mark.slow
def test_prints_the_accuracy_and_the_confusion_matrix_computed_independently(champion, capsys):
    folder, labels, predictions, names = champion
    assert evaluate.main(["--data-dir", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    correct = int(np.sum(predictions == labels))
    assert lines[0] == (f"models:/clrsearch-cifar10@champion: test accuracy {100 * correct / labels.size:.2f}% "
                        f"({correct} of {labels.size} images)")
    assert lines[1] == f"test accuracy logged with the model: {100 * correct / labels.size:.2f}%"
    header, *rows = lines[2:]
    assert header.split()[3:] == list(names)  # after "true \ predicted"
    assert len(rows) == len(names)
    for k, (name, row) in enumerate(zip(names, rows)):
        assert row.split() == [name, *(str(np.sum((labels == k) & (predictions == j))) for j in range(len(names)))]
    assert len({len(line) for line in lines[2:]}) == 1  # aligned columns


@pytest.mark.slow
def test_json_holds_accuracy_confusion_matrix_and_class_names(champion, capsys):
    folder, labels, predictions, names = champion
    assert evaluate.main(["--data-dir", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    counts = np.zeros((len(names), len(names)), int)
    np.add.at(counts, (labels, predictions), 1)
    assert result["confusion_matrix"] == counts.tolist()
    assert result["class_names"] == list(names)
    assert result["accuracy"] == result["logged_test_accuracy"] == pytest.approx(np.mean(predictions == labels))


@pytest.mark.slow
def test_an_unknown_model_is_one_line_and_exit_status_2(champion, capsys):
    folder = champion[0]
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--model-uri", "models:/no-such-model@champion", "--data-dir", str(folder)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "python -m clrsearch.fine" in err


def test_no_store_at_all_is_one_line_and_creates_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    with pytest.raises(SystemExit) as stop:
        evaluate.main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "python -m clrsearch.fine" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_format_matrix_aligns_counts_under_the_class_names():
    text = cli_evaluate.format_matrix([[12, 0], [3, 105]], ["cat", "airplane"])
    # Names 16 wide ("true \\ predicted"), then columns 9 wide (the longest name, "airplane", and a space).
    assert text.splitlines() == ["true \\ predicted" + "      cat" + " airplane",
                                 "cat" + " " * 13 + "       12" + "        0",
                                 "airplane" + " " * 8 + "        3" + "      105"]
