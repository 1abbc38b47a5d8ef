"""The confusion matrices drawn in a process of their own (clrsearch.tracking.painter): the same files as drawn
in the study's own process, drawing here once the child is gone, and a child that ends with its parent however
the parent ends."""
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from clrsearch.confusion import CONFUSION_JSON, CONFUSION_PNG, ConfusionFigure, seed_files
from clrsearch.tracking.painter import ConfusionPainter

NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def predictions(n=3):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 1000)
    return y, [np.where(rng.random(1000) < 0.3 + 0.2 * k, y, rng.integers(0, 10, 1000)) for k in range(n)]


def assert_same_files(folder, here):
    assert np.array_equal(np.asarray(Image.open(folder / CONFUSION_PNG)), np.asarray(Image.open(here / CONFUSION_PNG)))
    assert (folder / CONFUSION_JSON).read_text() == (here / CONFUSION_JSON).read_text()


def test_the_painter_process_writes_the_files_this_process_would(tmp_path):
    y, preds = predictions()
    figure = ConfusionFigure()
    with ConfusionPainter() as painter:
        futures = [painter.submit(tmp_path / f"child-{k}", y, p, NAMES, f"validation, seed {k}")
                   for k, p in enumerate(preds)]
        folders = [future.result(timeout=120) for future in futures]
        with pytest.raises(RuntimeError, match="FileExistsError"):  # a failed job fails its future only
            painter.submit(tmp_path / "child-0", y, preds[0], NAMES, "again").result(timeout=120)
    for k, (p, folder) in enumerate(zip(preds, folders)):
        assert folder == tmp_path / f"child-{k}"
        assert_same_files(folder, seed_files(figure, tmp_path / f"here-{k}", y, p, NAMES, f"validation, seed {k}"))


def test_once_the_child_is_gone_the_matrices_are_drawn_here(tmp_path):
    y, (p,) = predictions(1)
    with ConfusionPainter() as painter:
        for child in painter._children:
            child.process.kill()
            child.process.wait()
        folder = painter.submit(tmp_path / "after", y, p, NAMES, "validation, seed 0").result(timeout=60)
    assert_same_files(folder, seed_files(ConfusionFigure(), tmp_path / "here", y, p, NAMES, "validation, seed 0"))


def test_each_job_goes_to_a_free_child_and_none_to_a_child_that_is_gone(tmp_path):
    y, preds = predictions(8)
    with ConfusionPainter(processes=2) as painter:
        first, second = painter._children
        futures = [painter.submit(tmp_path / f"job-{k}", y, p, NAMES, f"validation, seed {k}")
                   for k, p in enumerate(preds[:6])]
        [future.result(timeout=120) for future in futures]
        assert first.taken + second.taken == 6 and first.taken > 0 and second.taken > 0
        taken = second.taken
        first.process.kill()
        first.process.wait()
        while not first.gone:
            time.sleep(0.01)
        later = [painter.submit(tmp_path / f"job-{k}", y, p, NAMES, f"validation, seed {k}")
                 for k, p in enumerate(preds[6:], start=6)]
        folders = [future.result(timeout=120) for future in later]
        assert second.taken == taken + 2
    figure = ConfusionFigure()
    for k, folder in zip((6, 7), folders):
        here = seed_files(figure, tmp_path / f"here-{k}", y, preds[k], NAMES, f"validation, seed {k}")
        assert_same_files(folder, here)


def test_the_jobs_a_dying_child_leaves_unanswered_are_drawn_here(tmp_path):
    y, preds = predictions(12)
    with ConfusionPainter() as painter:
        futures = [painter.submit(tmp_path / f"job-{k}", y, p, NAMES, f"validation, seed {k}")
                   for k, p in enumerate(preds)]
        for child in painter._children:
            child.process.kill()  # most jobs are still queued or half drawn
        folders = [future.result(timeout=120) for future in futures]
    figure = ConfusionFigure()
    for k, (p, folder) in enumerate(zip(preds, folders)):
        assert_same_files(folder, seed_files(figure, tmp_path / f"here-{k}", y, p, NAMES, f"validation, seed {k}"))


PARENT = textwrap.dedent("""
    import time
    from clrsearch.tracking.painter import ConfusionPainter
    with ConfusionPainter() as painter:
        print(*(child.process.pid for child in painter._children), flush=True)
        time.sleep(600)
""")


def test_the_painter_ends_with_its_parent_even_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    children = [int(pid) for pid in parent.stdout.readline().split()]
    for child in children:
        os.kill(child, 0)  # running
    parent.kill()
    parent.wait()
    for child in children:
        for _ in range(300):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"painter pid {child} outlived its killed parent")


def test_a_figure_handed_to_the_painter_is_saved_as_this_process_would_save_it(tmp_path):
    from clrsearch import plots

    figure = plots.lambda_search([1e-4, 1e-3, 1e-2], [0.50, 0.52, 0.47], [0.004, 0.003, 0.006],
                                 title="coarse search: mean validation accuracy ± 3σ", tied=[True, False, False])
    with ConfusionPainter(processes=1) as painter:
        saved = painter.submit_figure(tmp_path / "child.png", figure, 100).result(timeout=120)
    figure.savefig(tmp_path / "here.png", dpi=100)
    assert saved == tmp_path / "child.png"
    assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(Image.open(tmp_path / "here.png")))
