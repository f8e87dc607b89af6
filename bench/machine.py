"""How busy the machine was during a scenario, and how much of that was not us.

Benchmarks on a shared 2-core machine are only as good as its quiet: each
scenario records the CPU used by every process on the machine and by this
benchmark (harness + servers + drivers, via getrusage of waited-for
children), so a table can say how much other work competed with it.
"""

from __future__ import annotations

import os
import resource
import time

import psutil


def _ours() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _busy() -> float:
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class Load:
    def __enter__(self) -> Load:
        self._t0, self._busy0, self._ours0 = time.monotonic(), _busy(), _ours()
        self.load_before = os.getloadavg()[0]
        return self

    def __exit__(self, *exc) -> None:
        elapsed = time.monotonic() - self._t0
        cores = os.cpu_count() or 1
        busy, ours = _busy() - self._busy0, _ours() - self._ours0
        self.seconds = elapsed
        self.machine_busy = 100 * busy / (elapsed * cores)
        self.others = max(0.0, 100 * (busy - ours) / (elapsed * cores))
        self.load_after = os.getloadavg()[0]

    def summary(self) -> str:
        return (f"machine during this scenario ({self.seconds:.0f} s): {self.machine_busy:.0f}% of {os.cpu_count()} cores busy, "
                f"{self.others:.0f}% by processes outside this benchmark; load avg {self.load_before:.1f} -> {self.load_after:.1f}")

    def as_dict(self) -> dict:
        return {"seconds": round(self.seconds, 1), "machine_busy_percent": round(self.machine_busy, 1),
                "others_percent": round(self.others, 1), "loadavg_before": self.load_before, "loadavg_after": self.load_after}
