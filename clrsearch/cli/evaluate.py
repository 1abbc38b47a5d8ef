"""Test a registered model on the CIFAR-10 test batch: accuracy and confusion matrix.

    python -m clrsearch.evaluate [--model-uri models:/clrsearch-cifar10@champion] [--data-dir DIR] [--json]

The model is loaded from MLflow (``$MLFLOW_TRACKING_URI``, else ``mlflow.db``
in the working directory) and given the raw rows of ``test_batch``, exactly as
they are stored. Prints the test accuracy, the one the run that logged the
model recorded, and the 10 x 10 confusion matrix (rows: true class, columns:
predicted class); ``--json`` prints one JSON object instead.
"""

import json

import numpy as np

from .. import data, tracking
from ..data.cifar10 import TEST_FILE
from . import args as cli
from . import environment

DEFAULT_MODEL_URI = f"models:/{tracking.REGISTERED_NAME}@{tracking.ALIAS}"


def evaluate(model_uri: str = DEFAULT_MODEL_URI, data_dir=None) -> dict:
    """Accuracy and confusion matrix of the model on the test batch of ``data_dir`` (None: ``$CLRSEARCH_DATA``
    or the per-user cache).

    Returns
    -------
    dict with ``model_uri``, ``accuracy``, ``n_images``, ``class_names``,
    ``confusion_matrix`` (C, C) as lists (rows true class, columns predicted
    class), and ``logged_test_accuracy`` (None when the model's run cannot be read)

    Raises
    ------
    UsageError
        No such model, or missing or corrupt data.
    """
    model = tracking.load_model(model_uri)  # first: a missing model should not wait for data
    folder = data.ensure_data(environment.data_dir(data_dir))
    rows, labels = data.load_batch(folder / TEST_FILE)  # (N, D) uint8, (N,)
    predictions = np.asarray(model.predict(rows), dtype=np.int64)  # (N,)
    report = tracking.confusion_report(labels, predictions, data.load_label_names(folder))
    logged = tracking.run_metrics(model.metadata.run_id).get("test_accuracy")
    return {"model_uri": model_uri, **report, "logged_test_accuracy": logged}


def format_matrix(matrix, class_names) -> str:
    """The confusion matrix as aligned text, class names on both axes."""
    matrix = np.asarray(matrix)
    corner = "true \\ predicted"
    label_width = max(len(corner), *(len(name) for name in class_names))
    width = max(*(len(name) for name in class_names), len(str(matrix.max()))) + 1
    lines = [corner.ljust(label_width) + "".join(name.rjust(width) for name in class_names)]
    for name, row in zip(class_names, matrix):
        lines.append(name.ljust(label_width) + "".join(str(count).rjust(width) for count in row))
    return "\n".join(lines)


@cli.entry_point
def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m clrsearch.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI, help=f"MLflow model URI (default {DEFAULT_MODEL_URI})")
    parser.add_argument("--data-dir", help="folder of cifar-10-batches-py (default $CLRSEARCH_DATA or the cache)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    result = evaluate(args.model_uri, args.data_dir)
    if args.json:
        print(json.dumps(result))
        return 0
    correct = int(np.trace(result["confusion_matrix"]))
    print(f"{args.model_uri}: test accuracy {100 * result['accuracy']:.2f}% "
          f"({correct} of {result['n_images']} images)")
    if result["logged_test_accuracy"] is not None:
        print(f"test accuracy logged with the model: {100 * result['logged_test_accuracy']:.2f}%")
    print(format_matrix(result["confusion_matrix"], result["class_names"]))
    return 0
