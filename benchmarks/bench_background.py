"""What a background turn adds over the same turn in the foreground, in process.

The same streamed turn (the scripted Responses app, ``DELTAS`` deltas, MemoryStore)
is run through the middleware twice: as an ordinary ``stream: true`` request, and with
``background: true`` as well, where the client follows the recorded events. Both are
timed from the request to the last byte the client gets, interleaved, median of
``ROUNDS``. The difference is the background machinery: recording every event in the
store, folding it into the snapshot, and the follower reading the events back.

``python benchmarks/bench_background.py`` prints a markdown table; ``run.py background``
includes it.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from _common import Row, call_asgi, markdown_table, median, ms, row

from state_middleware import MemoryStore, ResponsesStateMiddleware
from state_middleware.testing import ScriptedResponsesApp

__all__ = ["rows"]

DELTAS = 500
ROUNDS = 40


def _body(background: bool) -> bytes:
    request = {"model": "m", "input": f"go DELTAS:{DELTAS}", "stream": True}
    if background:
        request["background"] = True
    return msgspec.json.encode(request)


async def _measure() -> tuple[float, float]:
    app = ResponsesStateMiddleware(ScriptedResponsesApp(), store=MemoryStore())
    bodies = {False: _body(False), True: _body(True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS + 3):
        for background in (False, True):
            started = time.perf_counter()
            status, reply = await call_asgi(app, "/v1/responses", bodies[background])
            elapsed = time.perf_counter() - started
            if status != 200 or b"response.completed" not in reply:
                raise RuntimeError("the turn did not complete")
            times[background].append(elapsed)
    await asyncio.gather(*list(app.background.tasks))
    return median(times[False][3:]), median(times[True][3:])


def rows() -> list[Row]:
    foreground, background = asyncio.run(_measure())
    added = background - foreground
    return [
        row(
            f"{DELTAS}-delta streamed turn in background mode, added over the same turn "
            "in the foreground (in process, MemoryStore)",
            f"+{ms(added)} ({background / foreground:.2f}x)",
            details=(
                f"median of {ROUNDS}: foreground {ms(foreground)}, background "
                f"{ms(background)}; {added / (DELTAS + 8) * 1e6:.1f} us per event"
            ),
        )
    ]


def main() -> None:
    print(markdown_table(rows()))


if __name__ == "__main__":
    main()
