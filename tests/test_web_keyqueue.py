"""The Verify page's key queue (``src/inquire/web/static/keyqueue.js``, the file the page
loads) as a state machine: node runs the real module, hypothesis presses keys, taps and
clicks and delivers pages of results in any order, and after every step the queue's state
must equal a model that replays every action so far against the results loaded so far.

The model says what "every key applies, in order, to the result it was meant for" means:
actions apply in key order; one that needs a result not loaded yet waits, with all after it,
until it arrives; at the end of the ranking the cursor stops at the last result. Once every
page is in, the marks equal those of the same keys on a page that had everything at once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "src" / "inquire" / "web" / "static" / "keyqueue.js"
DRIVER = ROOT / "tests" / "js" / "keyqueue_driver.js"
NODE = shutil.which("node")
MARKS = ["relevant", "not_relevant", "unsure", "clear"]

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


class Node:
    """One node process running the driver over the real module, shared by all examples."""

    proc: subprocess.Popen[str] | None = None

    @classmethod
    def send(cls, cmd: dict[str, Any]) -> dict[str, Any]:
        if cls.proc is None or cls.proc.poll() is not None:
            assert NODE is not None
            cls.proc = subprocess.Popen(
                [NODE, str(DRIVER), str(MODULE)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert cls.proc.stdin is not None and cls.proc.stdout is not None
        cls.proc.stdin.write(json.dumps(cmd) + "\n")
        cls.proc.stdin.flush()
        line = cls.proc.stdout.readline()
        assert line, "the node driver ended"
        out: dict[str, Any] = json.loads(line)
        return out

    @classmethod
    def close(cls) -> None:
        if cls.proc is not None:
            assert cls.proc.stdin is not None
            cls.proc.stdin.close()
            cls.proc.wait(timeout=60)
            cls.proc = None


def replay(actions: list[dict[str, Any]], loaded: int, done: bool) -> dict[str, Any]:
    """What the page shows after ``actions`` when ``loaded`` results are in (``done``: that
    is the whole ranking): cursor, marks by index, actions still waiting, undo depth."""
    marks: dict[int, str] = {}
    undo: list[tuple[int, str]] = []
    if loaded == 0:
        return {"cur": -1, "marks": {}, "waiting": 0 if done else len(actions), "undo": 0}
    cur = 0

    def moved_down(cur: int) -> int | None:
        """The cursor after moving down, or None when that result is not loaded yet."""
        if cur + 1 < loaded:
            return cur + 1
        return cur if done else None

    for n, a in enumerate(actions):
        op = a["op"]
        if op in ("mark", "markAt"):
            i = cur if op == "mark" else a["i"]
            undo.append((i, marks.get(i, "clear")))
            if a["value"] == "clear":
                marks.pop(i, None)
            else:
                marks[i] = a["value"]
            cur = i
        if op in ("down", "mark", "markAt"):
            nxt = moved_down(cur)
            if nxt is None:  # this action (its move) and every later one wait
                return {"cur": cur, "marks": marks, "waiting": len(actions) - n, "undo": len(undo)}
            cur = nxt
        elif op == "up":
            cur = max(cur - 1, 0)
        elif op == "goto":
            cur = a["i"]
        elif op == "undo" and undo:
            i, prev = undo.pop()
            if prev == "clear":
                marks.pop(i, None)
            else:
                marks[i] = prev
            cur = i
    return {"cur": cur, "marks": marks, "waiting": 0, "undo": len(undo)}


class KeyQueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[dict[str, Any]] = []
        self.total = 0
        self.loaded = 0
        self.done = False
        self.state: dict[str, Any] = {}

    @initialize(total=st.integers(0, 70))
    def new_search(self, total: int) -> None:
        self.total = total
        self.state = Node.send({"op": "reset"})

    def _push(self, action: dict[str, Any]) -> None:
        self.actions.append(action)
        self.state = Node.send({"op": "push", "action": action})

    @rule(key=st.sampled_from(["down", "up", "undo"]))
    def move_or_undo(self, key: str) -> None:
        self._push({"op": key})

    @rule(value=st.sampled_from(MARKS))
    def mark(self, value: str) -> None:
        self._push({"op": "mark", "value": value})

    @precondition(lambda self: self.loaded > 0)
    @rule(data=st.data(), value=st.sampled_from(MARKS))
    def tap(self, data: st.DataObject, value: str) -> None:
        i = data.draw(st.integers(0, self.loaded - 1))
        self._push({"op": "markAt", "i": i, "value": value})

    @precondition(lambda self: self.loaded > 0)
    @rule(data=st.data())
    def click(self, data: st.DataObject) -> None:
        self._push({"op": "goto", "i": data.draw(st.integers(0, self.loaded - 1))})

    @precondition(lambda self: not self.done)
    @rule(size=st.integers(1, 30))
    def results_arrive(self, size: int) -> None:
        self.loaded = min(self.total, self.loaded + size)
        self.done = self.loaded == self.total
        self.state = Node.send({"op": "arrived", "n": self.loaded, "done": self.done})

    @invariant()
    def same_as_replay(self) -> None:
        if not self.state:
            return
        want = replay(self.actions, self.loaded, self.done)
        got = {
            "cur": self.state["cur"],
            "marks": {int(k): v for k, v in self.state["marks"].items()},
            "waiting": self.state["waiting"],
            "undo": self.state["undo"],
        }
        assert got == want, (self.actions, self.loaded, self.done)
        if got["cur"] >= 0:
            assert self.state["selected"] == got["cur"]  # the page shows the cursor
        if got["waiting"]:
            assert self.state["asked"] > 0  # waiting actions asked for more results

    def teardown(self) -> None:
        # Every page arrives: nothing waits, and the marks are those of a page that had
        # every result from the start.
        if not self.state:
            return
        if not self.done:
            self.state = Node.send({"op": "arrived", "n": self.total, "done": True})
            assert self.state["waiting"] == 0
            full = replay(self.actions, self.total, True)
            assert {int(k): v for k, v in self.state["marks"].items()} == full["marks"]


KeyQueueMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestKeyQueue = KeyQueueMachine.TestCase


def teardown_module() -> None:
    Node.close()


def test_thirty_fast_keys_across_two_loads() -> None:
    """The reported case: 30 marks from rank 1 while only 24 results are loaded, the rest
    arriving after the keys: every mark lands on its own result, in order."""
    Node.send({"op": "reset"})
    Node.send({"op": "arrived", "n": 24, "done": False})
    values = [MARKS[i % 3] for i in range(30)]
    for v in values:
        state = Node.send({"op": "push", "action": {"op": "mark", "value": v}})
    assert state["waiting"] == 7 and state["asked"] > 0  # the 24th mark's move and 6 more
    assert state["cur"] == 23
    state = Node.send({"op": "arrived", "n": 48, "done": False})
    assert {int(k): v for k, v in state["marks"].items()} == dict(enumerate(values))
    assert state["cur"] == 30 and state["waiting"] == 0


def test_keys_during_a_ranking_round_wait_and_apply_to_its_results() -> None:
    """A ranking round replaces the results after the cursor: keys pressed while it runs
    wait, then apply to the results it shows (the cursor on its first new one); a tap on a
    result it replaced is dropped, one on a kept result applies; a failed round (arrived)
    lets them apply to the results as they were."""
    Node.send({"op": "reset"})
    Node.send({"op": "arrived", "n": 24, "done": False})
    for v in ["relevant", "not_relevant"]:
        Node.send({"op": "push", "action": {"op": "mark", "value": v}})
    Node.send({"op": "hold"})
    Node.send({"op": "push", "action": {"op": "down"}})
    Node.send({"op": "push", "action": {"op": "mark", "value": "unsure"}})
    Node.send({"op": "push", "action": {"op": "markAt", "i": 6, "value": "relevant"}})
    state = Node.send({"op": "push", "action": {"op": "markAt", "i": 0, "value": "clear"}})
    assert state["waiting"] == 4 and state["cur"] == 2
    assert state["marks"] == {"0": "relevant", "1": "not_relevant"}
    state = Node.send({"op": "relearn", "keep": 3, "n": 27, "done": False})
    assert state["waiting"] == 0
    assert state["marks"] == {"1": "not_relevant", "4": "unsure"}
    assert state["cur"] == 1  # the tap on #0 moves the cursor there, and on
    Node.send({"op": "reset"})
    Node.send({"op": "arrived", "n": 24, "done": False})
    Node.send({"op": "hold"})
    Node.send({"op": "push", "action": {"op": "down"}})
    state = Node.send({"op": "push", "action": {"op": "mark", "value": "relevant"}})
    assert state["waiting"] == 2 and state["cur"] == 0
    state = Node.send({"op": "arrived", "n": 24, "done": False})
    assert state["marks"] == {"1": "relevant"} and state["cur"] == 2 and state["waiting"] == 0
