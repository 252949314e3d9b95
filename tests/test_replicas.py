"""Two uvicorn processes sharing one Redis behave as one server: chains hop between
them, survive a crashed replica, wait for a turn still streaming on the other one, and
both fail cleanly (503, then recover) while Redis is down.

Each replica is ``tests/replica_app.py`` in its own process, driven by the official SDK.
The processes and their Redis are started once for the module.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis as redis_client

from ._redis import RedisServer
from ._servers import free_port, listening, wait_until_serving
from ._sync import HANG_GUARD

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DELAY = 0.05  # seconds before each streamed event
LEASE = 2.0  # seconds a background worker's lease lasts


class Replica:
    """``python -m uvicorn tests.replica_app:app`` on a port of its own."""

    def __init__(self, name: str, redis_url: str, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"replica-{name}.log"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DELAY": str(DELAY),
            "BACKGROUND_LEASE": str(LEASE),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "tests.replica_app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--lifespan",
                    "off",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        try:
            wait_until_serving(lambda: listening(self.port), self.process, "replica")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.log.read_text()}") from None

    def kill(self) -> None:
        """Crash: SIGKILL, no shutdown of any kind."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck replica
                self.kill()
            self.process = None

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key="sk-test", max_retries=0, timeout=HANG_GUARD
        )


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def replicas(
    redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    log_dir = tmp_path_factory.mktemp("replicas")
    pair = (Replica("a", redis.url, log_dir), Replica("b", redis.url, log_dir))
    try:
        for replica in pair:
            replica.launch()
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.stop()


@pytest.fixture(autouse=True)
def everything_running(redis: RedisServer, replicas: tuple[Replica, Replica]) -> None:
    """A test that failed half way must not leave the next one without Redis or a
    replica."""
    if redis.process is None:
        redis.start()
    for replica in replicas:
        if replica.process is None:
            replica.launch()
            replica.wait_ready()


def test_a_chain_alternating_between_replicas_keeps_its_whole_history(
    replicas: tuple[Replica, Replica],
) -> None:
    with replicas[0].sdk() as on_a, replicas[1].sdk() as on_b:
        previous = None
        for turn in range(6):
            sdk = (on_a, on_b)[turn % 2]
            kwargs: dict[str, Any] = {"previous_response_id": previous} if previous else {}
            response = sdk.responses.create(model="m", input=f"turn {turn}", **kwargs)
            assert response.output_text == f"[{2 * turn + 1} items] turn {turn}"
            previous = response.id
        assert previous is not None
        assert on_a.responses.retrieve(previous).output_text == "[11 items] turn 5"
        on_a.responses.delete(previous)
        with pytest.raises(openai.NotFoundError):
            on_b.responses.retrieve(previous)


def test_a_replica_crashing_mid_chain_is_restarted_and_the_chain_goes_on(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    with a.sdk() as on_a, b.sdk() as on_b:
        first = on_a.responses.create(model="m", input="one")
        second = on_a.responses.create(model="m", input="two", previous_response_id=first.id)
        a.kill()
        third = on_b.responses.create(model="m", input="three", previous_response_id=second.id)
        a.launch()
        a.wait_ready()
        fourth = on_a.responses.create(model="m", input="four", previous_response_id=third.id)
    assert third.output_text == "[5 items] three"
    assert fourth.output_text == "[7 items] four"


def test_a_follow_up_on_one_replica_waits_for_the_turn_streaming_on_the_other(
    redis: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    hold = f"hold:{uuid.uuid4().hex}"  # a holds its stream after response.created
    created: queue.Queue[str] = queue.Queue()
    completed: list[str] = []
    errors: list[BaseException] = []

    def stream_on_a() -> None:
        try:
            with (
                a.sdk() as sdk,
                sdk.responses.create(
                    model="m", input="DELTAS:10", stream=True, extra_headers={"x-test-hold": hold}
                ) as stream,
            ):
                for event in stream:
                    if event.type == "response.created":
                        created.put(event.response.id)
                    elif event.type == "response.completed":
                        completed.append(event.response.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            created.put("")

    follow_ups: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def follow_up_on_b(streaming_id: str) -> None:
        try:
            with b.sdk() as on_b:
                follow_ups.set_result(
                    on_b.responses.create(
                        model="m", input="next", previous_response_id=streaming_id
                    )
                )
        except BaseException as exc:  # pragma: no cover - reported below
            follow_ups.set_exception(exc)

    admin = redis_client.Redis.from_url(redis.url, socket_timeout=HANG_GUARD)
    streaming = threading.Thread(target=stream_on_a)
    streaming.start()
    try:
        streaming_id = created.get(timeout=HANG_GUARD)
        assert streaming_id
        with admin.monitor() as monitor:
            following = threading.Thread(target=follow_up_on_b, args=(streaming_id,))
            following.start()
            # B looks at the turn's pending mark; looking again means it saw it there.
            looks = 0
            while looks < 2:
                command = monitor.next_command()["command"]
                if command.startswith("EXISTS ") and command.endswith(f":{streaming_id}"):
                    looks += 1
        assert not follow_ups.done()
        admin.lpush(hold, "go")  # a streams the rest and stores the turn
        follow_up = follow_ups.result(timeout=HANG_GUARD)
    finally:
        admin.lpush(hold, "go")
        admin.close()
        streaming.join(HANG_GUARD)
    assert not errors
    assert completed == [streaming_id]
    assert follow_up.output_text == "[3 items] next"


def test_both_replicas_answer_503_while_redis_is_down_then_recover(
    redis: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    with replicas[0].sdk() as on_a, replicas[1].sdk() as on_b:
        first = on_a.responses.create(model="m", input="hello")
        redis.stop()
        try:
            for sdk in (on_a, on_b):
                # The SDK's timeout is the hang guard; the replicas answer at once.
                with pytest.raises(openai.InternalServerError) as follow_up:
                    sdk.responses.create(model="m", input="again", previous_response_id=first.id)
                with pytest.raises(openai.InternalServerError) as retrieve:
                    sdk.responses.retrieve(first.id)
                for caught in (follow_up.value, retrieve.value):
                    assert caught.status_code == 503
                    assert caught.type == "server_error"
                    assert caught.code == "store_unavailable"
        finally:
            redis.start()  # empty: this Redis keeps nothing across restarts
        again = on_a.responses.create(model="m", input="back")
        follow = on_b.responses.create(model="m", input="on", previous_response_id=again.id)
    assert follow.output_text == "[3 items] on"


def test_a_streamed_turn_that_cannot_be_stored_ends_failed_and_is_logged(
    redis: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    a = replicas[0]
    events: list[dict[str, Any]] = []
    body = {"model": "m", "input": "DELTAS:20 doomed", "stream": True}
    with httpx.Client(base_url=a.url, timeout=10) as http:
        try:
            with http.stream("POST", "/v1/responses", json=body) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    events.append(json.loads(line.removeprefix("data: ")))
                    if events[-1]["type"] == "response.created":
                        redis.stop()
        finally:
            redis.start()
    kinds = [event["type"] for event in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    assert events[-2]["error"]["code"] == "store_unavailable"
    response_id = events[0]["response"]["id"]
    assert events[-1]["response"]["id"] == response_id
    assert f"response {response_id} was not stored" in a.log.read_text()


def test_a_new_turn_while_redis_is_down_answers_503(
    redis: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    with replicas[0].sdk() as sdk:
        redis.stop()
        try:
            with pytest.raises(openai.InternalServerError) as caught:
                sdk.responses.create(model="m", input="new")
        finally:
            redis.start()
    assert caught.value.status_code == 503
    assert caught.value.code == "store_unavailable"


def test_a_conversation_goes_on_from_either_replica(replicas: tuple[Replica, Replica]) -> None:
    with replicas[0].sdk() as on_a, replicas[1].sdk() as on_b:
        conversation = on_a.conversations.create(items=[{"role": "user", "content": "hi"}])
        first = on_a.responses.create(model="m", input="one", conversation=conversation.id)
        second = on_b.responses.create(model="m", input="two", conversation=conversation.id)
        on_b.conversations.items.create(conversation.id, items=[{"role": "user", "content": "x"}])
        third = on_a.responses.create(model="m", input="three", conversation=conversation.id)
        items = list(on_a.conversations.items.list(conversation.id, order="asc"))
    assert first.output_text == "[2 items] one"
    assert second.output_text == "[4 items] two"
    assert third.output_text == "[7 items] three"
    assert len(items) == 8
    assert items[-1].id == third.output[0].id


def test_a_conversation_busy_on_one_replica_is_locked_on_the_other(
    redis: RedisServer, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    hold = f"hold:{uuid.uuid4().hex}"  # a holds its stream after response.created
    with a.sdk() as on_a, b.sdk() as on_b:
        conversation = on_a.conversations.create()
    created: queue.Queue[str] = queue.Queue()
    completed: list[str] = []

    def stream_on_a() -> None:
        with (
            a.sdk() as sdk,
            sdk.responses.create(
                model="m",
                input="DELTAS:3",
                stream=True,
                conversation=conversation.id,
                extra_headers={"x-test-hold": hold},
            ) as stream,
        ):
            for event in stream:
                if event.type == "response.created":
                    created.put(event.response.id)
                elif event.type == "response.completed":
                    completed.append(event.response.id)

    admin = redis_client.Redis.from_url(redis.url, socket_timeout=HANG_GUARD)
    streaming = threading.Thread(target=stream_on_a)
    streaming.start()
    try:
        streaming_id = created.get(timeout=HANG_GUARD)
        with b.sdk() as on_b, pytest.raises(openai.BadRequestError) as caught:
            on_b.responses.create(model="m", input="meanwhile", conversation=conversation.id)
        admin.lpush(hold, "go")
        streaming.join(HANG_GUARD)
        with b.sdk() as on_b:
            after = on_b.responses.create(model="m", input="after", conversation=conversation.id)
    finally:
        admin.lpush(hold, "go")
        admin.close()
        streaming.join(HANG_GUARD)
    assert caught.value.code == "conversation_locked"
    assert completed == [streaming_id]
    assert after.output_text == "[3 items] after"


def first_events(stream: Any, count: int) -> list[Any]:
    """The first ``count`` events of an SDK stream (the stream stays open)."""
    had = []
    for event in stream:
        had.append(event)
        if len(had) == count:
            break
    return had


def test_a_background_turn_started_on_one_replica_is_resumed_and_cancelled_on_another(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    with a.sdk() as on_a, b.sdk() as on_b:
        started = on_a.responses.create(model="m", input="DELTAS:400", background=True, stream=True)
        had = first_events(started, 5)
        started.close()
        response_id = had[0].response.id
        resumed = on_b.responses.retrieve(response_id, stream=True, starting_after=4)
        more = first_events(resumed, 3)
        cancelled = on_b.responses.cancel(response_id)
        rest = list(resumed)
        on_a_now = on_a.responses.retrieve(response_id)
    assert [e.sequence_number for e in had + more] == list(range(8))
    assert cancelled.status == "cancelled"
    assert on_a_now.status == "cancelled"
    assert all(e.type != "response.completed" for e in rest)


def test_a_background_turn_whose_replica_dies_fails_on_the_other(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    with a.sdk() as on_a, b.sdk() as on_b:
        started = on_a.responses.create(model="m", input="DELTAS:400", background=True, stream=True)
        had = first_events(started, 4)
        response_id = had[0].response.id
        a.kill()
        # B follows the recorded events; when the dead worker's lease is over the
        # response fails and the stream ends with it.
        followed = [
            e.type for e in on_b.responses.retrieve(response_id, stream=True, starting_after=3)
        ]
        failed = on_b.responses.retrieve(response_id)
    assert followed[-2:] == ["error", "response.failed"]
    assert failed.status == "failed"
    assert failed.error is not None
    assert "stopped before it finished" in failed.error.message
