"""A population's work split over the cores: one slice of its members per thread.

Every update step and evaluation of a population is independent from member
to member, so K members can be cut into ``n`` slices of adjacent rows, each
worked by a thread of its own. While the slices run, NumPy's BLAS is held to
one thread: each slice's products then run single-threaded in the thread that
calls them, side by side, instead of one multi-threaded product at a time
(docs/PERFORMANCE.md has the figures).

The slices are part of the rounding: OpenBLAS rounds an entry of a float32
product by the place of its row in the rows it is given, so a population cut
into another number of slices trains the same networks to float32 rounding,
not to the bit.

``cores`` says how many threads to use, and is asked again before every
piece of work, so that a process that learns it must share the machine
(:mod:`clrsearch.search.cores`) uses fewer slices from its next step on.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait

from threadpoolctl import ThreadpoolController


class MemberThreads:
    """Runs ``work(i, start, stop)`` over slices of K members, one thread per slice, as a context manager.

    Parameters
    ----------
    cores : callable() -> int, the threads to use now; None for one slice (the
        caller's thread, BLAS left as it is)
    """

    def __init__(self, cores=None):
        self.cores = cores
        self._pool = None
        self._controller = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return False

    def slices(self, K):
        """(start, stop) of each slice of K members: as many as cores allow, at most K, sizes differing by one."""
        n = max(1, min(self.threads(), K))
        return [(i * K // n, (i + 1) * K // n) for i in range(n)]

    def threads(self):
        """The threads to use now."""
        return max(1, int(self.cores())) if self.cores is not None else 1

    def map(self, work, K):
        """[work(i, start, stop) for each slice i of K members]: see :meth:`map_slices`."""
        return self.map_slices(work, self.slices(K))

    def map_slices(self, work, slices):
        """[work(i, start, stop) for each (start, stop) = slices[i]], the first in this thread, the others in
        the pool, BLAS held to one thread while they run."""
        if len(slices) == 1:
            return [work(0, *slices[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads() - 1, thread_name_prefix="clrsearch-slice")
            self._controller = ThreadpoolController()
        with self._controller.limit(limits=1, user_api="blas"):
            futures = [self._pool.submit(work, i, start, stop) for i, (start, stop) in enumerate(slices) if i]
            try:
                first = work(0, *slices[0])
            finally:
                wait(futures)  # no slice outlives the BLAS limit, even when this one raised
            return [first] + [future.result() for future in futures]
