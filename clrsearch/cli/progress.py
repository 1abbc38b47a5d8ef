"""Progress bars of long commands, on stderr."""

import contextlib

from tqdm import tqdm


@contextlib.contextmanager
def progress_bar(total, unit, quiet=False, description=None):
    """A tqdm bar on stderr, or None when ``quiet``; silent when stderr is not a terminal."""
    if quiet:
        yield None
        return
    with tqdm(total=total, unit=unit, desc=description, disable=None, dynamic_ncols=True,
              mininterval=0.5) as bar:
        yield bar
