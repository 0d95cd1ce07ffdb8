"""Where a step's time goes: the ``time/*`` metrics (docs/metrics.md).

``with timer("rollout"): ...`` adds the block's wall time to a phase; ``timer.add(phase, s)``
adds seconds measured elsewhere (the rollout's policy forwards, the game's engine clock).
Phases may nest: ``step`` holds all the others.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

from chessrl import keys as K

#: the phases a step reports, each as ``time/<phase>``
PHASES = ("step", "rollout", "reward_engine", "policy", "learner", "budget")


class Timer:
    """Seconds per phase of one step."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def metrics(self) -> dict[str, float]:
        """``time/<phase>`` for every phase, and ``time/overhead_frac``: the share of the step
        spent neither in the reward engine, nor in policy forwards, nor in the learner."""
        s = self.seconds
        out = {f"time/{phase}": s[phase] for phase in PHASES}
        busy = s["reward_engine"] + s["policy"] + s["learner"]
        out[K.TIME_OVERHEAD_FRAC] = max(0.0, 1 - busy / s["step"]) if s["step"] > 0 else 0.0
        return out
