"""RayBackend's restart of lost actors, against a stand-in for Ray's API (no cluster): the
node a restarted actor goes to is lost too, a restarted actor cannot be placed, and two
threads (the web server's pool) search while the same actor is lost."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ray")

from ray.exceptions import ActorUnschedulableError, RayActorError

from inquire.index import ray_serve
from inquire.index.ivfpq import Manifest, PartitionInfo
from inquire.index.ray_serve import RayBackend

NODES = ["a" * 56, "b" * 56, "c" * 56]


class _Ref:
    def __init__(self, actor: _Actor, value: Any) -> None:
        self.actor, self.value = actor, value


class _Method:
    def __init__(self, actor: _Actor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self.actor, (self.name, self.actor.part["number"]))


class _Actor:
    def __init__(self, ray: _Ray, node: str, part: dict[str, int]) -> None:
        self.ray, self.node_id, self.part, self.dead = ray, node, part, False
        self.search, self.node = _Method(self, "search"), _Method(self, "node")


class _Remote:
    def __init__(self, ray: _Ray, strategy: Any = None, name: str = "") -> None:
        self.ray, self.strategy, self.name = ray, strategy, name

    def options(self, name: str, scheduling_strategy: Any) -> _Remote:
        return _Remote(self.ray, scheduling_strategy, name)

    def remote(self, store: str, folder: str, part: dict[str, int]) -> _Actor:
        # Ray frees a killed actor's name some time after ray.kill returns: a name used
        # before would race with it, so every actor gets a name never used before.
        if self.name in self.ray.names:
            raise ValueError(f"The name {self.name} is already taken")
        self.ray.names.add(self.name)
        actor = _Actor(self.ray, self.strategy.node_id, part)
        self.ray.started.append(actor)
        return actor


class _Ray:
    """The calls RayBackend makes; ``on_failure`` runs when a get fails."""

    def __init__(self) -> None:
        self.alive = set(NODES[:2])
        self.started: list[_Actor] = []
        self.names: set[str] = set()
        self.unschedulable: set[str] = set()  # nodes whose actors are never placed
        self.on_failure: Any = None

    def remote(self, num_cpus: int) -> Any:
        return lambda cls: _Remote(self)

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": n, "Alive": n in self.alive} for n in NODES]

    def put(self, x: Any) -> Any:
        return x

    def kill(self, actor: _Actor) -> None:
        actor.dead = True

    def get(self, ref: _Ref | list[_Ref], timeout: float | None = None) -> Any:
        if isinstance(ref, list):
            return [self.get(r) for r in ref]
        a = ref.actor
        if a.dead or a.node_id not in self.alive or a.node_id in self.unschedulable:
            if self.on_failure is not None:
                self.on_failure(a)
            if a.node_id in self.unschedulable:
                raise ActorUnschedulableError("the node it was pinned to is gone")
            raise RayActorError()
        if ref.value[0] == "node":
            return a.node_id
        return [(np.array([ref.value[1]]), np.array([0.0]))]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> tuple[_Ray, RayBackend]:
    ray = _Ray()
    monkeypatch.setattr(ray_serve, "_ray", lambda: ray)
    man = Manifest.__new__(Manifest)
    object.__setattr__(man, "partitions", [PartitionInfo(i, 10 * i, 10 * i + 10) for i in range(4)])
    return ray, RayBackend("store", "folder", man)


def _search(backend: RayBackend) -> list[int]:
    out = backend.search(np.zeros((1, 4), np.float32), 1, [None] * 4, None)  # type: ignore[arg-type]
    return [int(part[0][0][0]) for part in out]


def test_actors_are_pinned_round_robin_and_a_lost_one_goes_to_the_emptiest_node(fake) -> None:
    ray, backend = fake
    assert backend.nodes() == [NODES[0], NODES[1], NODES[0], NODES[1]]
    ray.alive.add(NODES[2])
    backend.actors[1].dead = True
    assert _search(backend) == [0, 1, 2, 3]
    assert backend.restarts == 1 and backend.nodes()[1] == NODES[2]


def test_a_restarted_actor_whose_node_is_lost_too_is_started_again(fake) -> None:
    ray, backend = fake
    ray.alive = {NODES[0]}  # node b gone: partitions 1 and 3 lost
    ray.alive.add(NODES[2])
    ray.unschedulable.add(NODES[2])

    def lose_c(actor: _Actor) -> None:  # node c goes away before it takes the actor
        if actor.node_id == NODES[2]:
            ray.alive.discard(NODES[2])

    ray.on_failure = lose_c
    assert _search(backend) == [0, 1, 2, 3]
    assert set(backend.nodes()) == {NODES[0]}


def test_a_search_fails_when_no_node_can_hold_the_partition(fake) -> None:
    ray, backend = fake
    ray.alive = set()
    with pytest.raises(RuntimeError, match="no live Ray node"):
        _search(backend)


def test_two_searches_that_lose_the_same_actor_start_it_again_once(fake) -> None:
    ray, backend = fake
    backend.actors[2].dead = True
    both_failed = threading.Barrier(2, timeout=60)

    def wait_for_the_other(actor: _Actor) -> None:
        if actor.part["number"] == 2 and actor is ray.started[2]:
            both_failed.wait()  # both searches saw the loss before either restarts

    ray.on_failure = wait_for_the_other
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_search(backend))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and results == [[0, 1, 2, 3]] * 2
    assert backend.restarts == 1
    assert sum(a.part["number"] == 2 for a in ray.started) == 2  # the first, one restart


def test_actors_started_before_an_interruption_are_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or an error) while the actors start: those already started are stopped, so a
    library user's cluster is not left holding them."""
    ray = _Ray()
    monkeypatch.setattr(ray_serve, "_ray", lambda: ray)
    started = {"n": 0}
    real = RayBackend._start

    def interrupted(self: RayBackend, part: Any, node: Any) -> Any:
        if started["n"] == 2:
            raise KeyboardInterrupt
        started["n"] += 1
        return real(self, part, node)

    monkeypatch.setattr(RayBackend, "_start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        man = Manifest.__new__(Manifest)
        parts = [PartitionInfo(i, 10 * i, 10 * i + 10) for i in range(3)]
        object.__setattr__(man, "partitions", parts)
        RayBackend("store", "folder", man)
    assert len(ray.started) == 2 and all(a.dead for a in ray.started)
