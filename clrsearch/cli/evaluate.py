"""Test a registered model on the CIFAR-10 test batch: accuracy and confusion matrix.

    python -m clrsearch.evaluate [--model-uri models:/clrsearch-cifar10@champion] [--data-dir DIR] [--json]
    python -m clrsearch.evaluate --verify-only models:/clrsearch-cifar10/3

The model's files are downloaded from MLflow (``$MLFLOW_TRACKING_URI``, else
``mlflow.db`` in the working directory) and checked against the SHA-256
digests its version recorded when it was registered, before any of its code
runs (:mod:`clrsearch.tracking.verify`); a model whose files differ, are
missing or were added is refused (exit status 2). The checked copy is then
loaded and given the raw rows of ``test_batch``, exactly as they are stored.
Prints the test accuracy, the one the run that logged the model recorded, and
the 10 x 10 confusion matrix (rows: true class, columns: predicted class);
``--json`` prints one JSON object instead. ``--verify-only URI`` checks the
files and loads nothing.
"""

import json
import tempfile

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
    dict with ``model_uri``, ``model_version`` (the version it resolved to), ``accuracy``, ``n_images``, ``class_names``,
    ``confusion_matrix`` (C, C) as lists (rows true class, columns predicted
    class), and ``logged_test_accuracy`` (None when the model's run cannot be read)

    Raises
    ------
    UsageError
        No such model, files that fail verification, or missing or corrupt data.
    """
    with tempfile.TemporaryDirectory(prefix="clrsearch-evaluate-") as copy:
        verified, model = tracking.load_verified(model_uri, copy)  # first: a bad model should not wait for data
        folder = data.ensure_data(environment.data_dir(data_dir))
        rows, labels = data.load_batch(folder / TEST_FILE)  # (N, D) uint8, (N,)
        predictions = np.asarray(model.predict(rows), dtype=np.int64)  # (N,)
    report = tracking.confusion_report(labels, predictions, data.load_label_names(folder))
    logged = tracking.run_metrics(verified.run_id).get("test_accuracy")
    return {"model_uri": model_uri, "model_version": verified.version, **report, "logged_test_accuracy": logged}


def verify_only(model_uri: str) -> dict:
    """Check the files of ``model_uri`` against their digests, running none of them; returns ``model_uri``,
    ``model_version`` and ``files`` (path -> sha256). Raises UsageError when they fail."""
    with tempfile.TemporaryDirectory(prefix="clrsearch-verify-") as copy:
        verified = tracking.verify_model(model_uri, copy)
    return {"model_uri": model_uri, "model_version": verified.version, "files": verified.files}


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
    parser.add_argument("--verify-only", metavar="MODEL_URI",
                        help="check the files of a registered version (models:/NAME/VERSION or models:/NAME@ALIAS) "
                             "against the digests recorded at registration, load nothing, and exit")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.verify_only:
        checked = verify_only(args.verify_only)
        print(json.dumps(checked) if args.json else
              f"{args.verify_only}: version {checked['model_version']}, its {len(checked['files'])} files match "
              f"their digests")
        return 0
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
