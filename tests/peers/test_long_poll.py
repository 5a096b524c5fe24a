"""`fedsilo.peers.deployment.long_poll`: an empty pull waits for the next push, and only an empty one."""

import threading
import time

import pytest

from fedsilo.peers.deployment.long_poll import LongPoll


class _Mailbox:
    """A pull handler over a list, and a push handler appending to it."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pulls = 0

    def pull(self) -> list[str]:
        self.pulls += 1
        taken, self.items = self.items, []
        return taken

    def push(self, item: str) -> None:
        self.items.append(item)


def _empty(answer: list[str]) -> bool:
    return not answer


def _box(args, kwargs):
    return "box"


def _other(args, kwargs):
    return "other"


def _timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_an_empty_pull_is_answered_as_soon_as_something_is_pushed():
    box, poll = _Mailbox(), LongPoll(hold_seconds=5.0)
    pull, push = poll.pull(box.pull, _empty, _box), poll.push(box.push, _box)
    threading.Timer(0.2, push, args=("m1",)).start()
    answer, seconds = _timed(pull)
    assert answer == ["m1"]
    assert 0.15 < seconds < 2.0  # held until the push, not for the whole 5 s


def test_an_empty_pull_with_no_push_is_answered_empty_after_the_hold():
    box, poll = _Mailbox(), LongPoll(hold_seconds=0.3)
    answer, seconds = _timed(poll.pull(box.pull, _empty, _box))
    assert answer == []
    assert 0.25 < seconds < 2.0
    assert box.pulls == 1  # nothing arrived: the handler was not asked again


def test_a_pull_with_an_answer_is_not_held():
    box, poll = _Mailbox(), LongPoll(hold_seconds=5.0)
    box.push("ready")
    answer, seconds = _timed(poll.pull(box.pull, _empty, _box))
    assert answer == ["ready"] and seconds < 1.0 and box.pulls == 1


def test_a_push_of_the_same_key_that_does_not_fill_the_answer_keeps_the_pull_held():
    """Another node's messages wake every held message pull; a pull still empty goes back to waiting."""
    mine, poll = _Mailbox(), LongPoll(hold_seconds=5.0)
    pull = poll.pull(mine.pull, _empty, _box)
    threading.Timer(0.1, poll.push(lambda: None, _box)).start()
    threading.Timer(0.4, poll.push(mine.push, _box), args=("mine",)).start()
    answer, seconds = _timed(pull)
    assert answer == ["mine"] and 0.35 < seconds < 2.5
    assert mine.pulls == 3  # first ask, after the other push, after its own


def test_a_push_of_another_key_does_not_wake_the_pull():
    mine, poll = _Mailbox(), LongPoll(hold_seconds=5.0)
    pull = poll.pull(mine.pull, _empty, _box)
    for delay in (0.05, 0.1, 0.15):
        threading.Timer(delay, poll.push(lambda: None, _other)).start()
    threading.Timer(0.3, poll.push(mine.push, _box), args=("mine",)).start()
    answer, _ = _timed(pull)
    assert answer == ["mine"] and mine.pulls == 2  # never asked again for the other key's pushes
    assert poll.arrivals._channels == {}  # pylint: disable=protected-access  # nothing left once nobody waits


def test_a_push_between_the_first_ask_and_the_wait_is_not_missed():
    box, poll = _Mailbox(), LongPoll(hold_seconds=5.0)
    push = poll.push(box.push, _box)

    def racing_pull():
        answer = box.pull()
        if box.pulls == 1:
            push("raced")  # arrives after the handler looked, before the wrapper waits
        return answer

    answer, seconds = _timed(poll.pull(racing_pull, _empty, _box))
    assert answer == ["raced"] and seconds < 1.0


def test_a_failed_push_still_wakes_the_held_pulls():
    box, poll = _Mailbox(), LongPoll(hold_seconds=5.0)

    def refused():
        box.push("stored before the error")
        raise ValueError("refused")

    def push_later():
        with pytest.raises(ValueError):
            poll.push(refused, _box)()

    threading.Timer(0.1, push_later).start()
    answer, seconds = _timed(poll.pull(box.pull, _empty, _box))
    assert answer == ["stored before the error"] and seconds < 2.0


def test_beyond_max_holders_an_empty_pull_is_answered_at_once():
    box, poll = _Mailbox(), LongPoll(hold_seconds=1.0, max_holders=2)
    pull = poll.pull(box.pull, _empty, _box)
    holders = [threading.Thread(target=pull) for _ in range(2)]
    for holder in holders:
        holder.start()
    time.sleep(0.1)
    answer, seconds = _timed(pull)  # the third: no slot left
    assert answer == [] and seconds < 0.5
    for holder in holders:
        holder.join()
    _, seconds = _timed(pull)  # slots are given back
    assert seconds > 0.9
