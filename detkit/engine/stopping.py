"""When a training run stops: its step and time budget, and Ctrl-C or SIGTERM, decided at step
boundaries and, under torchrun, by every process together.

A signal does not stop a run where it lands (half-way through ``optimizer.step()`` the
weights would be half-updated): the first Ctrl-C (SIGINT) or SIGTERM (what torchrun, SLURM
and Kubernetes send before killing) asks the run to stop after the step in progress; the
trainer then writes a resumable ``last.pth`` and raises ``Interrupted``. A second Ctrl-C, a
second or more later, stops at once (the last checkpoint written is whole either way).

Under torchrun each process notices a signal, or crosses the time limit, at its own moment;
a process that stopped one step before the others would leave them waiting in the next
all-reduce for ever. So the decision is taken together: at every step boundary the processes
all-reduce (max) their (interrupted, over time) flags, and all stop after the same step.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

import torch
import torch.distributed as dist

from detkit.engine.distributed import World


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM after a whole step, with a resumable ``last.pth``."""


class Budget:
    """Whether the run should stop now: ``max_iters`` reached, ``time_limit_min`` crossed, or a
    signal received (see the module docstring). ``interrupted`` says which it was."""

    SIGNALS = ("SIGINT", "SIGTERM")
    # torchrun passes a Ctrl-C on to its workers, which the terminal has already sent them: a
    # second SIGINT this soon after the first is that copy, not the user asking to stop at once
    ECHO_S = 1.0

    def __init__(self, world: World, *, max_iters: int | None, time_limit_min: float | None, device: str = "cpu"):
        self.world, self.max_iters, self.limit_s = world, max_iters, 60 * time_limit_min if time_limit_min else None
        self.device = device if world.size > 1 and dist.get_backend() == "nccl" else "cpu"
        self.started = time.monotonic()
        self.requested: float | None = None  # when a signal arrived (this process)
        self.interrupted = False  # the run stops because of a signal (every process agrees)
        self.over_time = False
        self._decided: tuple[int, bool] | None = None  # (iteration, decision): one agreement per step
        self._previous: dict[int, object] = {}

    # -- the signals

    def __enter__(self) -> Budget:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for name in self.SIGNALS:
                number = getattr(signal, name, None)
                if number is not None:
                    self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _on_signal(self, number, frame) -> None:
        now = time.monotonic()
        if self.requested is not None and number == signal.SIGINT:
            if now - self.requested > self.ECHO_S:  # the second Ctrl-C: stop now
                raise KeyboardInterrupt
            return  # torchrun's copy of the first one
        self.requested = now
        if self.world.main:
            sys.stderr.write(f"\n{signal.Signals(number).name}: stopping after this step and saving a resumable "
                             "checkpoint (Ctrl-C again to stop at once)\n")

    # -- the decision

    def stop(self, iteration: int) -> bool:
        """True when the run must stop after ``iteration`` steps (the same answer in every process)."""
        if self._decided is not None and self._decided[0] == iteration:
            return self._decided[1]
        over_time = self.limit_s is not None and time.monotonic() - self.started > self.limit_s
        flags = [float(self.requested is not None), float(over_time)]
        if self.world.size > 1:
            agreed = torch.tensor(flags, device=self.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
            flags = agreed.tolist()
        self.interrupted, self.over_time = bool(flags[0]), bool(flags[1])
        decision = self.interrupted or self.over_time or (self.max_iters is not None and iteration >= self.max_iters)
        self._decided = (iteration, decision)
        return decision
