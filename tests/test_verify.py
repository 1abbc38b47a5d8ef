"""A registered version's files checked against their digests before any of its code runs
(clrsearch.tracking.verify, ``python -m clrsearch.evaluate --verify-only``): the tiny ensemble of
``conftest.tiny_ensemble`` registered into a temporary store, then its files in the artifact store changed,
removed or added to; the digests are checked against hashlib over the stored files."""

import hashlib
import json
from pathlib import Path
from urllib.parse import urlparse

import mlflow.pyfunc
import numpy as np
import pytest

from clrsearch import evaluate, tracking
from clrsearch.errors import UsageError
from clrsearch.nn import network
from clrsearch.tracking import verify

NAME = "clrsearch-verify"
URI = f"models:/{NAME}/1"
MODEL_FILES = {"MLmodel", "cifar_classifier.py", "artifacts/weights.npz", "requirements.txt", "conda.yaml",
               "python_env.yaml", "input_example.json", "serving_input_example.json"}


@pytest.fixture(scope="module")
def registered(store, tiny_ensemble):
    """Version 1 of NAME (alias champion) and the folder of its files in the artifact store."""
    splits, nets = tiny_ensemble.splits, tiny_ensemble.nets
    pred = network.ensemble_predict(nets, splits.test.X)
    final = tracking.FinalModel(
        run_name="final:verify", params={"lam": 0.01}, history=tiny_ensemble.result.history, member=0,
        val_accuracy=0.25, test_accuracy=float(np.mean(pred == splits.test.y)), test_true=splits.test.y,
        test_pred=pred, class_names=splits.label_names, networks=nets, normaliser=splits.normaliser,
        dtype="float32", input_example=tiny_ensemble.rows[:2])
    tracking.log_final_model(final, "verify", registered_name=NAME)
    location = store.get_model_version_download_uri(NAME, "1")
    return Path(urlparse(location).path), pred


@pytest.fixture
def stored(registered):
    """The store's model folder, restored to its registered files after the test."""
    folder = registered[0]
    saved = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    yield folder
    for path in folder.rglob("*"):
        if path.is_file() and path not in saved:
            path.unlink()
    for path, content in saved.items():
        path.write_bytes(content)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def append_marker_line(folder, marker):
    """Append one line to the model's code that writes ``marker`` when the code runs."""
    with (folder / "cifar_classifier.py").open("a") as f:
        f.write(f"open({str(marker)!r}, 'w').write('ran')\n")


@pytest.mark.slow
def test_the_version_records_the_sha256_of_every_stored_file(store, registered):
    folder = registered[0]
    recorded = json.loads(store.get_model_version(NAME, "1").tags[verify.DIGEST_TAG])
    assert set(recorded) == MODEL_FILES
    assert recorded == {name: sha256(folder / name) for name in MODEL_FILES}


@pytest.mark.slow
def test_a_verified_version_loads_from_its_checked_copy_and_predicts(store, registered, tiny_ensemble, tmp_path):
    verified, model = verify.load_verified(f"models:/{NAME}@champion", tmp_path)
    assert (verified.version, verified.uri) == ("1", URI)
    assert verified.path.is_relative_to(tmp_path)
    assert verify.file_digests(verified.path) == verified.files
    np.testing.assert_array_equal(model.predict(tiny_ensemble.rows), registered[1])


@pytest.mark.slow
def test_evaluate_refuses_a_model_whose_code_gained_one_line_and_runs_none_of_it(stored, tiny_ensemble, tmp_path,
                                                                                capsys):
    marker = tmp_path / "marker"
    append_marker_line(stored, marker)
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--model-uri", URI, "--data-dir", str(Path(tiny_ensemble.data.data_dir))])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cifar_classifier.py differs from its digest" in err
    assert not marker.exists()
    mlflow.pyfunc.load_model(URI)  # what loading without the check does: the appended line runs
    assert marker.read_text() == "ran"


@pytest.mark.slow
def test_one_appended_byte_is_refused(stored, tmp_path):
    with (stored / "cifar_classifier.py").open("ab") as f:
        f.write(b"\n")
    with pytest.raises(UsageError, match=f"^{URI}: file cifar_classifier.py differs"):
        verify.verify_model(URI, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("change, message", [
    (lambda folder: (folder / "artifacts" / "weights.npz").unlink(), "file artifacts/weights.npz is missing"),
    (lambda folder: (folder / "sitecustomize.py").write_text("print('hello')\n"), "file sitecustomize.py was added"),
    (lambda folder: (folder / "artifacts" / "weights.npz").write_bytes(b"not weights"),
     "file artifacts/weights.npz differs"),
])
def test_a_missing_added_or_changed_file_is_refused_naming_it(stored, tmp_path, change, message):
    change(stored)
    with pytest.raises(UsageError, match=message) as error:
        verify.verify_model(URI, tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_verify_only_checks_without_loading(stored, tmp_path, capsys):
    assert evaluate.main(["--verify-only", f"models:/{NAME}@champion"]) == 0
    assert capsys.readouterr().out.strip() == f"models:/{NAME}@champion: version 1, its 8 files match their digests"
    marker = tmp_path / "marker"
    append_marker_line(stored, marker)
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--verify-only", URI])
    assert stop.value.code == 2 and not marker.exists()


@pytest.mark.slow
def test_a_version_without_digests_is_refused(store, registered, tmp_path):
    digests = store.get_model_version(NAME, "1").tags[verify.DIGEST_TAG]
    store.delete_model_version_tag(NAME, "1", verify.DIGEST_TAG)
    try:
        with pytest.raises(UsageError, match=f"^{URI} carries no files_sha256 tag"):
            verify.verify_model(URI, tmp_path)
    finally:
        store.set_model_version_tag(NAME, "1", verify.DIGEST_TAG, digests)


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/m-123", f"models:/{NAME}/latest", "/tmp/model"])
def test_only_a_registered_version_or_alias_can_be_verified(uri):
    with pytest.raises(UsageError, match="give a registered version"):
        verify.resolve_version(uri, client=None)


def test_digests_are_sha256_by_relative_path(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"abc")
    (tmp_path / "MLmodel").write_bytes(b"")
    # SHA-256 test vectors of FIPS 180-2: "abc" and the empty message.
    assert json.loads(verify.digest_tag(tmp_path)) == {
        "MLmodel": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "a/x.bin": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
