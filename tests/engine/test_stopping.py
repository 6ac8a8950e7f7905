"""Signals during training: the first asks for a stop at the next step boundary, torchrun's echo
of it is ignored, a later second Ctrl-C stops at once, and the handlers are put back after."""

import os
import signal
import time

import pytest

from detkit.engine.distributed import World
from detkit.engine.stopping import Budget


def test_first_signal_requests_a_stop_and_a_later_second_ctrl_c_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with Budget(World(), max_iters=None, time_limit_min=None) as budget:
        assert not budget.stop(1)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # torchrun's copy, a moment later: not a second Ctrl-C
        assert budget.stop(1) is False  # decided for step 1 already: every process asks once per step
        assert budget.stop(2) and budget.interrupted and not budget.over_time
        budget.requested -= 2 * Budget.ECHO_S
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes; never reached
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_requests_a_stop_too():
    with Budget(World(), max_iters=None, time_limit_min=None) as budget:
        os.kill(os.getpid(), signal.SIGTERM)
        assert budget.stop(1) and budget.interrupted


def test_max_iters_and_time_limit():
    budget = Budget(World(), max_iters=3, time_limit_min=1)
    assert [budget.stop(i) for i in (1, 2, 3)] == [False, False, True] and not budget.over_time
    budget = Budget(World(), max_iters=None, time_limit_min=1)
    budget.started -= 61
    assert budget.stop(1) and budget.over_time and not budget.interrupted
