"""A throwaway PostgreSQL cluster on 127.0.0.1 for the shared-storage tests.

    python tests/pgcluster.py start DIR    # prints postgresql://postgres@127.0.0.1:PORT/postgres
    python tests/pgcluster.py stop DIR
    python tests/pgcluster.py pause DIR     # stop the server, keep its data (an outage)
    python tests/pgcluster.py resume DIR    # start it again on its port

Uses Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, package
``postgresql``) or those on PATH. ``initdb`` refuses to run as root, so as
root the cluster runs as the ``postgres`` user, in a folder it owns. The
server trusts local connections and skips fsync: it is for tests only.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def bin_dir():
    """Folder of initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def start(folder):
    """Create and start a cluster in ``folder`` (created); returns the URL of its ``postgres`` database."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    as_user = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    port = _free_port()
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "--no-sync", "--no-instructions"], check=True, capture_output=True)
    (folder / "port").write_text(str(port))
    return resume(folder)


def resume(folder):
    """Start the server of the cluster in ``folder`` on its port; returns the URL of its ``postgres`` database."""
    folder = Path(folder).absolute()
    binaries = bin_dir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = int((folder / "port").read_text())
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-o", options, "-l",
                    str(folder / "log"), "-w", "-t", "60", "start"], check=True, capture_output=True)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait_ready(url)
    return url


def pause(folder):
    """Stop the server of the cluster in ``folder`` as an administrator restarting it would (fast shutdown: open
    sessions are cut), keeping its data for :func:`resume`."""
    folder = Path(folder).absolute()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_user, str(bin_dir() / "pg_ctl"), "-D", str(folder / "data"), "-m", "fast", "-w", "stop"],
                   check=True, capture_output=True)


def stop(folder):
    """Stop the cluster in ``folder`` and delete the folder."""
    folder = Path(folder).absolute()
    binaries = bin_dir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if binaries is not None and (folder / "data").is_dir():
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "-w",
                        "stop"], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def create_database(url, name):
    """Create database ``name`` on the server of ``url``; returns its URL."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url, seconds=30):
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                engine.connect().close()
                return
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        engine.dispose()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop", "pause", "resume"):
        sys.exit("usage: python tests/pgcluster.py start|stop|pause|resume DIR")
    if sys.argv[1] in ("start", "resume"):
        print((start if sys.argv[1] == "start" else resume)(sys.argv[2]))
    else:
        (stop if sys.argv[1] == "stop" else pause)(sys.argv[2])
