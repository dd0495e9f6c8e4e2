"""What a process tree uses while a bench step runs: peak memory and CPU seconds.

One sampler for every bench: :class:`TreeMonitor` watches a process (by default this one) and
all its descendants from a thread, every ``interval_s``, and keeps the peak of their summed RSS
(and, with ``pss``, of their summed PSS) and the CPU seconds they used. A process that ends
between two samples loses at most its last interval; PostgreSQL server processes are left out
(the embedded server is a child of whichever process started it, and is not the work measured).

RSS sums count pages shared after ``fork`` once per process; PSS splits them among the
processes sharing them (the physical total), at the price of reading ``smaps`` each sample.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Any, Self

MIB = 2**20


class TreeMonitor:
    """Peak summed RSS / PSS (bytes) and CPU seconds of process ``pid`` and its descendants.

    Use as a context manager around the work; read :attr:`peak_rss`, :attr:`peak_pss` and
    :attr:`cpu_seconds` after it (or :meth:`stop`).
    """

    def __init__(self, pid: int | None = None, *, interval_s: float = 0.05,
                 pss: bool = False) -> None:
        import psutil

        self.root = psutil.Process(pid or os.getpid())
        self.interval_s, self.pss = interval_s, pss
        self.peak_rss = self.peak_pss = 0
        self._cpu_first: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_seconds(self) -> float:
        """CPU (user + system) the tree used since :meth:`start`; processes that started
        later count from zero."""
        return sum(v - self._cpu_first.get(pid, 0.0) for pid, v in self._cpu_last.items())

    def start(self) -> Self:
        self._sample(first=True)
        self._thread.start()
        return self

    def stop(self) -> Self:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self, *, first: bool = False) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the root has ended: its last sample stands
            return
        rss = pss = 0
        for proc in procs:
            try:
                if proc.name().startswith("postgres"):
                    continue
                times: Any = proc.cpu_times()
                cpu = float(times.user + times.system)
                if first:
                    self._cpu_first[proc.pid] = cpu
                self._cpu_last[proc.pid] = cpu
                if self.pss:
                    info = proc.memory_full_info()
                    rss, pss = rss + info.rss, pss + info.pss
                else:
                    rss += proc.memory_info().rss
            except psutil.Error:
                pass
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
