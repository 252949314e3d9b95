"""``python -m state_middleware.demo`` runs a whole conversation and exits cleanly."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_a_streamed_conversation_with_retrieve_and_fork() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "state_middleware.demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    out = done.stdout
    for line in (
        "-- turn 4 ",
        "assistant < [1 items] Hi! My name is Ada.",
        "assistant < [7 items] Thanks, that is all.",
        "output_text='[7 items] Thanks, that is all.'",
        "(7 input items)",
        "-- fork from turn 2 ",
        "assistant < [5 items] Actually, let's talk about something else.",
    ):
        assert line in out, out
    assert out.rstrip().endswith("done")
