"""``python -m clrsearch.data`` (clrsearch.cli.data) on tiny CIFAR-10 copies: it lists the files,
writes and verifies the manifest, and a problem is one line and exit status 2."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clrsearch
from clrsearch.cli import data as command

pytestmark = pytest.mark.usefixtures("offline")


def test_cli_lists_writes_and_verifies(tiny_cifar, capsys):
    assert command.main(["--data-dir", str(tiny_cifar.parent), "--write-manifest", "--verify"]) == 0
    out = capsys.readouterr().out
    assert str(tiny_cifar) in out and "N = 200" in out
    assert "verified 7 files" in out


def test_cli_verify_without_manifest_fails(tiny_cifar, capsys):
    with pytest.raises(SystemExit) as exited:
        command.main(["--data-dir", str(tiny_cifar), "--verify"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--write-manifest" in err


def test_cli_missing_dir_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLRSEARCH_DATA"}
    env["PYTHONPATH"] = str(Path(clrsearch.__file__).parents[1])
    result = subprocess.run(
        [sys.executable, "-m", "clrsearch.data", "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nowhere" in lines[0]
