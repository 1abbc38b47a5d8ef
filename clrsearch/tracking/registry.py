"""The final model's run and the model registry: log, register, describe, alias.

The final model run holds the curves, test_accuracy and final_val_accuracy,
MLflow's evaluation of the test predictions (:func:`evaluate_on_test_set`:
per-class metrics and the confusion matrix), the
training, validation and test sets as dataset inputs, and the model, a pyfunc
(:mod:`.pyfunc`, its own NumPy code and weights, requirements numpy, pandas and
mlflow) registered as a new version of ``clrsearch-cifar10``. The run starts
and ends with the final training, and its curves carry the times training
reached their points.

The version records the SHA-256 of every file of the model as the artifact
store holds it (tag ``files_sha256``, :mod:`.verify`); its predictions of the
test images come from loading those verified files, and once the run has ended
it is compared with the ``@champion`` version and takes the alias
``champion`` or ``challenger`` (:mod:`.challenge`).

The registered model and each version have a Markdown description
(:func:`model_description`, :func:`version_description`), a version the tags
of :func:`_register`; the logged model carries the run's accuracies, each
linked to the dataset it was measured on (:func:`_of_model`).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlflow.artifacts
import mlflow.data
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from .artifacts import FIGURE_DPI, curve_metrics, point_timestamps, scalar_metrics, timed_curves
from .client import create_run, ended, log_batch, now_ms, to_ms
from .datasets import TESTING, TRAINING, VALIDATION, DataInputs, log_inputs
from .pyfunc import WEIGHTS_ARTIFACT, Classifier, signature, write_model_code
from .store import EXPERIMENT, experiment_id, git_commit
from .challenge import Settled, TestImages, settle, settled
from .verify import DIGEST_TAG, digest_tag, load_verified

REGISTERED_NAME = "clrsearch-cifar10"
ALIAS = "champion"
MODEL_NAME = "model"  # name of the logged model within its run
VERSION_SETTINGS = ("lam", "n_s", "n_s_epochs", "cycles", "clr_mode", "eta_min", "eta_max", "augment")  # tagged


@dataclass
class FinalModel:
    """What the final model's run holds.

    Attributes
    ----------
    run_name : str
    params : dict, flat config of the final training
    history : clrsearch.nn.trainer.History; member : int, its column logged under the plain names
    val_accuracy, test_accuracy : float, fractions 0..1
    test_true, test_pred : (N_test,) int labels and predictions
    class_names : sequence of C str
    networks : dict or list of dicts ``W1`` (M, D), ``b1`` (M, 1), ``W2`` (C, M), ``b2`` (C, 1);
        several form an ensemble that averages class probabilities
    normaliser : clrsearch.data.Normaliser of the training split, stored in the model
    dtype : str, precision the networks compute in
    input_example : (n, 3072) uint8, a few raw CIFAR-10 rows
    extra_metrics : dict, more scalar metrics; like ``val_accuracy`` (logged as
        ``final_val_accuracy``), one named like a curve gets the prefix ``final_``
    figures : dict name -> Figure, logged as ``<name>.png``
    members : tuple of int, more columns of ``history`` whose curves are logged, as ``member_<k>/<name>``
    inputs : DataInputs, optional, the training, validation and test sets, logged as the run's inputs
    started, ended : float, optional, s since the epoch: the final training's interval, the run's times
    eval_times : (P,) float, s since the epoch when training reached each point of ``history``
    study_name : str, the study the model comes from, in the version's description and tags
    test_rows : (N_test, 3072) uint8, optional, the raw test images of ``test_true``: the registered version
        and the champion predict them from their verified files (:mod:`.challenge`); needed once a champion exists
    """

    run_name: str
    params: dict
    history: object
    member: int
    val_accuracy: float
    test_accuracy: float
    test_true: np.ndarray  # (N_test,)
    test_pred: np.ndarray  # (N_test,)
    class_names: tuple
    networks: object
    normaliser: object
    dtype: str
    input_example: np.ndarray  # (n, 3072) uint8
    extra_metrics: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    members: tuple = ()
    inputs: DataInputs | None = None
    started: float | None = None
    ended: float | None = None
    eval_times: tuple = ()
    study_name: str = ""
    test_rows: np.ndarray | None = None  # (N_test, 3072) uint8

    def classifier(self) -> Classifier:
        """The model that is logged: the networks with the normaliser and class names."""
        networks = [self.networks] if isinstance(self.networks, dict) else list(self.networks)
        return Classifier(tuple(networks), self.normaliser, tuple(self.class_names), str(self.dtype))


def log_final_model(final: FinalModel, experiment: str = EXPERIMENT, parent_run_id: str | None = None,
                    registered_name: str = REGISTERED_NAME, alias: str = ALIAS,
                    promote: bool = False) -> tuple[str, str]:
    """The final model's run: curves, accuracies, MLflow's evaluation on the test set, and the registered model.

    ``parent_run_id`` nests the run under a study run. Once the run has
    ended, the new version of ``registered_name`` is compared with the version
    holding ``alias`` and takes the alias or becomes ``challenger``
    (:func:`.challenge.settle`; ``promote`` forces the move).

    Returns
    -------
    (run_id, model version) : (str, str)
    """
    classifier = final.classifier()
    client = MlflowClient()
    exp_id = experiment_id(client, experiment)
    tags = {"level": "final", "git_commit": git_commit()}
    if parent_run_id:
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_id = create_run(client, exp_id, final.run_name, tags, start_time=to_ms(final.started))
    end = to_ms(final.ended)
    with ended(client, run_id, "FINISHED", end_time=end), tempfile.TemporaryDirectory(prefix="clrsearch-") as folder:
        folder = Path(folder)
        params = {**final.params, "n_networks": len(classifier.networks)}
        log_batch(client, run_id, params=params)
        log_inputs(client, run_id, final.inputs, (TRAINING, VALIDATION, TESTING))
        model_id = _log_model(client, run_id, classifier, final.input_example, folder / "model", params)
        files = stored_digests(client, model_id, folder / "stored")
        version = _register(client, registered_name, model_id, run_id, final, parent_run_id, files)
        test = _verified_test_images(client, registered_name, version, final, folder / "verified")
        evaluated = evaluate_on_test_set(run_id, model_id, test, final)
        # Logged once the model exists, for the run and the model at once, each linked to its set. A final
        # value named like a curve (val_accuracy, ...) gets the prefix final_: same key, one history.
        extra = {"val_accuracy": final.val_accuracy, "test_accuracy": evaluated["accuracy_score"],
                 **final.extra_metrics}
        summary = {f"final_{key}" if key in final.history.metrics else key: value for key, value in extra.items()}
        log_batch(client, run_id, metrics=_of_model(scalar_metrics(summary, end or now_ms()), model_id, final.inputs))

        curves = timed_curves(final.history, final.member, final.eval_times, final.started, final.ended)
        points = point_timestamps(final.history.steps, final.eval_times, final.started, final.ended)  # (P,) ms
        for k in final.members:
            curves += [Metric(f"member_{k}/{m.key}", m.value, m.timestamp, m.step)
                       for m in curve_metrics(final.history, k, points)]
        log_batch(client, run_id, metrics=curves, tags={"registered_model": f"{registered_name}/{version}"})
        artifacts = folder / "artifacts"
        artifacts.mkdir()
        for stem, fig in final.figures.items():
            fig.savefig(artifacts / f"{stem}.png", dpi=FIGURE_DPI)
        client.log_artifacts(run_id, str(artifacts))
    settle(client, registered_name, version, test, alias, promote)
    return run_id, version


def evaluate_on_test_set(run_id: str, model_id: str, test: TestImages, final: FinalModel) -> dict:
    """MLflow's classifier evaluation of the version's test predictions, logged to the run and the logged model.

    ``mlflow.models.evaluate`` (model_type ``classifier``) on the test labels and predictions, as class names,
    in an MLflow dataset linked to the logged model ``model_id``: the metrics ``accuracy_score``,
    ``precision_score``, ``recall_score``, ``f1_score`` (weighted over the classes) and ``example_count``, and
    the artifacts ``per_class_metrics.csv`` (precision, recall, F1 and support of each class) and
    ``confusion_matrix.png`` (rows normalised, classes named). The predictions are given, not recomputed: the
    model has no class probabilities, so there are no ROC, PR or calibration curves, and model explainability
    (SHAP) is off. Returns the metrics.
    """
    names = np.asarray(final.class_names)
    frame = pd.DataFrame({"label": names[test.labels], "prediction": names[test.challenger_pred]})  # (N, 2)
    testing = final.inputs.testing if final.inputs is not None else None
    name = f"{testing.name if testing else f'cifar10-test-{len(frame)}'}-predictions"
    source = LocalArtifactDatasetSource(testing.source) if testing else None
    dataset = mlflow.data.from_pandas(frame, source=source, targets="label", predictions="prediction", name=name)
    config = {"log_model_explainability": False, "label_list": list(names)}
    with mlflow.start_run(run_id=run_id), _quiet("mlflow"):  # evaluate logs to the active run
        result = mlflow.models.evaluate(data=dataset, model_type="classifier", model_id=model_id,
                                        evaluator_config=config)
    return dict(result.metrics)


@contextlib.contextmanager
def _quiet(logger_name):
    """The logger's INFO lines (MLflow's evaluation narrating its steps) left out within the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _verified_test_images(client, name, version, final: FinalModel, folder: Path) -> TestImages:
    """The test images with the predictions of ``version`` loaded from its verified files (the package's own,
    ``final.test_pred``, when there are no raw rows to give it)."""
    if final.test_rows is None:
        return TestImages(None, np.asarray(final.test_true), np.asarray(final.test_pred))
    _, model = load_verified(f"models:/{name}/{version}", folder, client)
    predictions = np.asarray(model.predict(np.asarray(final.test_rows, dtype=np.uint8)), dtype=np.int64)  # (N,)
    return TestImages(final.test_rows, np.asarray(final.test_true), predictions)


def _of_model(metrics: list[Metric], model_id: str, inputs: DataInputs | None) -> list[Metric]:
    """The metrics as metrics of the logged model too, each linked to the set it was measured on, found by its
    name: ``test``, ``val``, ``train``."""
    sets = () if inputs is None else (("test", inputs.testing), ("val", inputs.validation), ("train", inputs.training))
    linked = []
    for m in metrics:
        on = next((s for word, s in sets if word in m.key), None)
        linked.append(Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id,
                             dataset_name=on and on.name, dataset_digest=on and on.digest))
    return linked


def _log_model(client, run_id, classifier, input_example, folder: Path, params) -> str:
    """Log ``classifier`` as a pyfunc model of the run, its code and weights; returns the logged model's id."""
    folder.mkdir()
    weights = classifier.save(folder / "weights.npz")
    code = write_model_code(folder)
    # What the model code imports, pinned as installed here: every package is on PyPI.
    requirements = [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    # Created here so that it belongs to the run's experiment, not to the default one.
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        params={key: str(value) for key, value in params.items()})
    Model.log(artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id, model_id=logged.model_id,
              python_model=str(code), artifacts={WEIGHTS_ARTIFACT: str(weights)}, signature=signature(),
              input_example=np.asarray(input_example, dtype=np.uint8), pip_requirements=requirements)
    return logged.model_id


def stored_digests(client, model_id: str, folder: Path) -> str:
    """The tag ``files_sha256`` of the logged model ``model_id``: the digests of its files as the artifact store
    holds them, downloaded into ``folder``."""
    location = client.get_logged_model(model_id).artifact_location
    return digest_tag(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(folder)))


def _register(client, name, model_id, run_id, final: FinalModel, parent_run_id, files: str) -> str:
    """A new version of the registered model ``name`` (created when missing), described and tagged, ``files``
    its tag ``files_sha256``."""
    try:
        client.create_registered_model(name, description=model_description(final))
    except MlflowException as error:
        if error.error_code not in (ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)):
            raise
        client.update_registered_model(name, description=model_description(final))
    members = len(final.classifier().networks)
    tags = {key: final.params[key] for key in VERSION_SETTINGS if key in final.params}
    tags.update({"test_accuracy": f"{final.test_accuracy:.4f}", "members": members, "study_name": final.study_name,
                 "study_run_id": parent_run_id or "", "run_id": run_id, DIGEST_TAG: files})
    version = client.create_model_version(name, f"models:/{model_id}", run_id=run_id,
                                          tags={key: str(value) for key, value in tags.items()},
                                          description=version_description(final, run_id, parent_run_id, members),
                                          model_id=model_id)
    return str(version.version)


def model_description(final: FinalModel) -> str:
    """The registered model's description (Markdown): what goes in, what comes out, how to load and serve it."""
    classes = ", ".join(f"{k} {name}" for k, name in enumerate(final.class_names))
    return (f"Two-layer NumPy networks classifying CIFAR-10 images, trained with cyclical learning rates by "
            f"clrsearch; the L2 strength λ is chosen by a coarse random and a fine grid search (Optuna).\n\n"
            f"- **input**: raw CIFAR-10 rows (N, 3072) of whole pixel values 0-255 in any integer or float dtype "
            f"(1024 red, then 1024 green, then 1024 blue values per image); anything else, normalised pixels "
            f"among it, is refused\n"
            f"- **output**: class indices (-1,) int64: {classes}\n"
            f"- **aliases** `{ALIAS}`: the final model that classified at least as many test images right as the "
            f"champion before it (or was forced with `--promote`); `challenger`: the latest one that did not; each "
            f"version's description says how it compared\n"
            f"- **load**: `mlflow.pyfunc.load_model(\"models:/{REGISTERED_NAME}@{ALIAS}\")` (needs numpy, pandas, "
            f"mlflow)\n"
            f"- **serve**: `mlflow models serve -m models:/{REGISTERED_NAME}@{ALIAS} --env-manager local`, "
            f"then POST `{{\"inputs\": rows}}` to `/invocations`")


def version_description(final: FinalModel, run_id: str, parent_run_id: str | None, members: int) -> str:
    """A version's description (Markdown): its study, settings, members, data and test accuracy."""
    settings = ", ".join(f"{key} {value}" for key, value in final.params.items())
    n_test = len(final.test_true)
    lines = [f"Final model of the study `{final.study_name or '?'}`: test accuracy "
             f"**{100 * final.test_accuracy:.2f} %** on {n_test} test images, validation accuracy "
             f"{100 * final.val_accuracy:.2f} %.", "",
             f"- **members**: {members} network{'s' if members > 1 else ''}"
             + (", their class probabilities averaged" if members > 1 else ""),
             f"- **settings**: {settings}"]
    if final.inputs is not None:
        lines.append(f"- **data**: trained on `{final.inputs.training.name}`, validated on "
                     f"`{final.inputs.validation.name}`, tested on `{final.inputs.testing.name}` "
                     f"(from {final.inputs.testing.source})")
    lines.append(f"- **runs**: final run `{run_id}`" + (f" of study run `{parent_run_id}`" if parent_run_id else ""))
    return "\n".join(lines)


def aliased_version(name: str = REGISTERED_NAME, alias: str = ALIAS,
                    client: MlflowClient | None = None) -> str | None:
    """The version number (a str) of the registered model ``name`` that ``alias`` points to, in the registry of
    ``client`` (by default ``$MLFLOW_REGISTRY_URI``'s, else ``$MLFLOW_TRACKING_URI``'s); None when there is no
    such model or alias."""
    client = client or MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def version_settled(version: str, name: str = REGISTERED_NAME, client: MlflowClient | None = None) -> Settled:
    """The alias ``version`` of ``name`` got against the champion, and why (:func:`.challenge.settled`)."""
    return settled(client or MlflowClient(), name, version)


def run_metrics(run_id: str | None) -> dict:
    """Latest value of every metric of the run; empty when there is no such run."""
    if not run_id:
        return {}
    try:
        return dict(MlflowClient().get_run(run_id).data.metrics)
    except MlflowException:
        return {}
