"""``python -m clrsearch.data``: locate and check the CIFAR-10 folder clrsearch uses.

    python -m clrsearch.data [--data-dir DIR] [--download] [--write-manifest] [--verify]

Prints the folder, its file sizes and the images per file and split.
"""

from ..data.cifar10 import DATA_FILES, ENV_VAR, FOLDER_NAME, META_FILE, TEST_FILE, TRAIN_FILES, DataError
from ..data.cifar10 import load_batch, load_label_names
from ..data.download import MANIFEST_NAME, ensure_data, verify_data_dir, write_manifest
from . import environment
from .args import ArgumentParser, entry_point


@entry_point
def main(argv=None):
    """Print the data folder, its file sizes and the images per file and split."""
    parser = ArgumentParser(
        prog="python -m clrsearch.data",
        description="Locate and check the CIFAR-10 folder clrsearch uses.")
    parser.add_argument("--data-dir", help=f"folder {FOLDER_NAME} or its parent "
                        f"(default: ${ENV_VAR}, else the per-user cache)")
    parser.add_argument("--download", action="store_true", help="download the data if missing")
    parser.add_argument("--write-manifest", action="store_true",
                        help=f"record the md5 of each file in {MANIFEST_NAME}")
    parser.add_argument("--verify", action="store_true",
                        help=f"check each file against {MANIFEST_NAME}")
    args = parser.parse_args(argv)
    folder = ensure_data(environment.data_dir(args.data_dir), download=args.download)
    print(folder)
    counts = {}
    for name in DATA_FILES:
        size = (folder / name).stat().st_size
        if name == META_FILE:
            print(f"  {name:<14} {size:>12,d} B  {', '.join(load_label_names(folder))}")
            continue
        counts[name] = load_batch(folder / name)[1].shape[0]
        print(f"  {name:<14} {size:>12,d} B  N = {counts[name]}")
    n_all = sum(counts[name] for name in TRAIN_FILES)
    n_test = counts[TEST_FILE]
    print(f"split batch1: train {counts[TRAIN_FILES[0]]}, "
          f"val {counts[TRAIN_FILES[1]]}, test {n_test}")
    print(f"split full: {n_all} images for train + val (val_size held out), test {n_test}")
    if args.write_manifest:
        print(f"wrote {write_manifest(folder)}")
    if args.verify:
        checked = verify_data_dir(folder)
        if checked is None:
            raise DataError(f"{folder} has no {MANIFEST_NAME} to verify against; "
                            f"run python -m clrsearch.data --write-manifest on a trusted copy")
        print(f"verified {len(checked)} files against {folder / MANIFEST_NAME}")
    return 0
