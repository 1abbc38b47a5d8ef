"""The final model's run and the model registry: log, register, alias, load.

The final model run holds the curves, test_accuracy and final_val_accuracy,
the test confusion matrix (confusion_test.png, .json) and the model, a pyfunc
(:mod:`.pyfunc`) registered as ``clrsearch-cifar10`` with the alias
``champion`` moved to the new version.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from .. import __version__, plots
from ..errors import UsageError
from .artifacts import FIGURE_DPI, confusion_report, curve_metrics, eta_metrics, scalar_metrics, write_json
from .client import create_run, ended, log_batch, now_ms
from .pyfunc import WEIGHTS_ARTIFACT, Classifier, raw_rows, write_model_code
from .store import EXPERIMENT, experiment_id, git_commit

REGISTERED_NAME = "clrsearch-cifar10"
ALIAS = "champion"
MODEL_NAME = "model"  # name of the logged model within its run


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
    members: tuple = ()  # more columns of ``history`` whose curves are logged, as ``member_<k>/<name>``

    def classifier(self) -> Classifier:
        """The model that is logged: the networks with the normaliser and class names."""
        networks = [self.networks] if isinstance(self.networks, dict) else list(self.networks)
        return Classifier(tuple(networks), self.normaliser, tuple(self.class_names), str(self.dtype))


def log_final_model(final: FinalModel, experiment: str = EXPERIMENT, parent_run_id: str | None = None,
                    registered_name: str = REGISTERED_NAME, alias: str = ALIAS) -> tuple[str, str]:
    """The final model's run: curves, accuracies, test confusion matrix, and the registered model.

    ``parent_run_id`` nests the run under a study run; ``alias`` moves to the
    new version of ``registered_name``.

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
    run_id = create_run(client, exp_id, final.run_name, tags)
    with ended(client, run_id, "FINISHED"), tempfile.TemporaryDirectory(prefix="clrsearch-") as folder:
        folder = Path(folder)
        # Logged before the model, so that the logged model carries them too. A final value named
        # like a curve (val_accuracy, train_accuracy, ...) gets the prefix final_: same key, one history.
        extra = {"val_accuracy": final.val_accuracy, "test_accuracy": final.test_accuracy, **final.extra_metrics}
        summary = {f"final_{key}" if key in final.history.metrics else key: value for key, value in extra.items()}
        params = {**final.params, "n_networks": len(classifier.networks)}
        log_batch(client, run_id, metrics=scalar_metrics(summary, now_ms()), params=params)
        version = _log_model(client, run_id, classifier, final.input_example, registered_name, folder / "model",
                             params)
        client.set_registered_model_alias(registered_name, alias, version)

        now = now_ms()
        curves = curve_metrics(final.history, final.member, now) + eta_metrics(final.history.eta, now)
        for k in final.members:
            curves += [Metric(f"member_{k}/{m.key}", m.value, m.timestamp, m.step)
                       for m in curve_metrics(final.history, k, now)]
        log_batch(client, run_id, metrics=curves, tags={"registered_model": f"{registered_name}/{version}"})
        artifacts = folder / "artifacts"
        artifacts.mkdir()
        cm = plots.confusion_matrix(final.test_true, final.test_pred, final.class_names, title="test set")
        cm.savefig(artifacts / "confusion_test.png", dpi=FIGURE_DPI)
        write_json(artifacts / "confusion_test.json",
                   confusion_report(final.test_true, final.test_pred, final.class_names))
        for stem, fig in final.figures.items():
            fig.savefig(artifacts / f"{stem}.png", dpi=FIGURE_DPI)
        client.log_artifacts(run_id, str(artifacts))
    return run_id, version


def _log_model(client, run_id, classifier, input_example, registered_name, folder: Path, params) -> str:
    """Log ``classifier`` as a pyfunc model of the run and register it; returns the new version."""
    folder.mkdir()
    weights = classifier.save(folder / "weights.npz")
    code = write_model_code(folder)
    example = raw_rows(input_example)
    # Column schema of doubles: uint8 and float rows, arrays and DataFrames all pass it.
    signature = infer_signature(pd.DataFrame(example.astype(np.float64)), classifier.predict(example))
    requirements = [f"clrsearch=={__version__}", f"mlflow=={mlflow.__version__}",
                    f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]
    # Created here so that it belongs to the run's experiment, not to the default one.
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                        params={key: str(value) for key, value in params.items()})
    info = Model.log(artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                     model_id=logged.model_id, python_model=str(code),
                     artifacts={WEIGHTS_ARTIFACT: str(weights)}, signature=signature,
                     input_example=pd.DataFrame(example), pip_requirements=requirements,
                     registered_model_name=registered_name)
    return str(info.registered_model_version)


def load_model(model_uri: str):
    """The pyfunc model at ``model_uri``.

    Raises
    ------
    UsageError
        No such model, alias or version, or no MLflow store where MLflow looks.
    """
    hint = "train and register one with python -m clrsearch.fine first"
    store_uri = mlflow.get_registry_uri() if model_uri.startswith("models:") else mlflow.get_tracking_uri()
    if store_uri.startswith("sqlite:///") and not Path(store_uri.removeprefix("sqlite:///")).is_file():
        # MLflow would create an empty store there; say where it looked instead.
        raise UsageError(f"no MLflow store at {store_uri.removeprefix('sqlite:///')} to load {model_uri} from; "
                         f"{hint}, or point MLFLOW_TRACKING_URI at the store that has it")
    try:
        return mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(f"cannot load model {model_uri} ({reason}); {hint}") from error


def aliased_version(name: str = REGISTERED_NAME, alias: str = ALIAS,
                    client: MlflowClient | None = None) -> str | None:
    """The version of a registered model that an alias points to.

    Parameters
    ----------
    name : str, optional
        Registered model name, ``REGISTERED_NAME`` by default.
    alias : str, optional
        Alias of one of its versions, ``ALIAS`` by default.
    client : MlflowClient, optional
        Client of the registry to read, ``MlflowClient()`` (``$MLFLOW_REGISTRY_URI``,
        else ``$MLFLOW_TRACKING_URI``) by default.

    Returns
    -------
    str or None
        The version number as a string; None when there is no such model or alias.
    """
    client = client or MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def run_metrics(run_id: str | None) -> dict:
    """Latest value of every metric of the run; empty when there is no such run."""
    if not run_id:
        return {}
    try:
        return dict(MlflowClient().get_run(run_id).data.metrics)
    except MlflowException:
        return {}
