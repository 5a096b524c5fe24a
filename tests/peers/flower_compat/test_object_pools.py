"""Contract of `fedsilo.peers.flower_compat.object_pools` with Flower's object pushes and pulls.

Runs Flower's own `pull_objects` and `push_object_contents_from_iterable` (the functions a
SuperNode and the ServerApp's grid call per message), after `reuse_object_threads`: the
same results and errors, at most Flower's number of concurrent requests per call, and the
same threads from one message to the next.
"""

import threading
import time

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectPullError, ObjectUnavailableError

from fedsilo.peers.flower_compat.object_pools import reuse_object_threads


@pytest.fixture(autouse=True)
def _reused() -> None:
    reuse_object_threads()
    reuse_object_threads()  # idempotent


class _Tracker:
    """Counts the calls running at once, and the threads that ran them."""

    def __init__(self, pause: float = 0.01) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.calls: list[str] = []

    def __call__(self, object_id: str, *_content: bytes) -> bytes:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
            self.calls.append(object_id)
        time.sleep(self.pause)
        with self.lock:
            self.running -= 1
        return f"content of {object_id}".encode()


def test_pulls_reuse_the_same_threads_from_one_message_to_the_next() -> None:
    tracker = _Tracker(pause=0.0)
    for message in range(20):
        ids = [f"{message}.{k}" for k in range(3)]
        assert inflatable_utils.pull_objects(ids, tracker) == {i: f"content of {i}".encode() for i in ids}
    # Flower's own code started a new pool (new thread names) for each of the 20 messages
    assert all(name.startswith("flwr-objects") for name in tracker.threads)
    assert len(tracker.threads) <= 3


def test_pushes_reuse_threads_and_push_every_object_once() -> None:
    tracker = _Tracker(pause=0.0)
    for message in range(10):
        inflatable_utils.push_object_contents_from_iterable(
            [(f"{message}.{k}", b"x") for k in range(3)], lambda object_id, content: tracker(object_id)
        )
    assert sorted(tracker.calls) == sorted(f"{m}.{k}" for m in range(10) for k in range(3))
    assert all(name.startswith("flwr-objects") for name in tracker.threads)


@pytest.mark.parametrize("limit", [1, 2])
def test_a_call_runs_at_most_flowers_number_of_requests_at_once(limit: int) -> None:
    tracker = _Tracker(pause=0.02)
    ids = [f"object-{k}" for k in range(6)]
    assert len(inflatable_utils.pull_objects(ids, tracker, max_concurrent_pulls=limit)) == 6
    assert tracker.most == min(limit, inflatable_utils.get_num_workers(limit))


def test_a_failed_pull_raises_and_starts_none_of_the_waiting_pulls() -> None:
    calls: list[str] = []

    def pull(object_id: str) -> bytes:
        calls.append(object_id)
        raise ObjectUnavailableError(object_id)

    with pytest.raises(ObjectPullError):
        inflatable_utils.pull_objects(
            ["first", "second", "third"], pull, max_concurrent_pulls=1, max_tries_per_object=1
        )
    time.sleep(0.05)  # anything still queued or waiting for the call's one slot would run now
    assert calls == ["first"]
    # the shared pool is still usable for the next message
    assert inflatable_utils.pull_objects(["next"], lambda object_id: b"ok") == {"next": b"ok"}


def test_a_failed_push_raises_and_pushes_nothing_after_it() -> None:
    pushed: list[str] = []

    def push(object_id: str, _content: bytes) -> None:
        pushed.append(object_id)
        raise RuntimeError(f"the servicer refused {object_id}")

    with pytest.raises(RuntimeError, match="refused a"):
        inflatable_utils.push_object_contents_from_iterable(
            [("a", b"1"), ("b", b"2"), ("c", b"3")], push, max_concurrent_pushes=1
        )
    time.sleep(0.05)
    assert pushed == ["a"]
