"""Which upstream is tried first: ``random`` (the default), ``round_robin``,
``sequential`` (CoreDNS's ``policy.go``). Each returns the order for one query."""

from __future__ import annotations

import random as _random
from typing import Sequence, TypeVar

__all__ = ["POLICIES", "Random", "RoundRobin", "Sequential"]

T = TypeVar("T")


class Random:
    name = "random"

    def __init__(self) -> None:
        self.rng = _random.Random()

    def order(self, items: Sequence[T]) -> list[T]:
        n = len(items)
        if n == 1:
            return list(items)
        if n == 2:
            return [items[1], items[0]] if self.rng.random() < 0.5 else list(items)
        shuffled = list(items)
        self.rng.shuffle(shuffled)
        return shuffled

    def pick(self, items: Sequence[T]) -> T:
        return self.order(items)[0]


class RoundRobin:
    """Each query starts one further along; the rest follow in configured order."""

    name = "round_robin"

    def __init__(self) -> None:
        self.robin = 0

    def order(self, items: Sequence[T]) -> list[T]:
        self.robin += 1
        i = self.robin % len(items)
        return [items[i], *items[:i], *items[i + 1:]]


class Sequential:
    name = "sequential"

    def order(self, items: Sequence[T]) -> list[T]:
        return list(items)


POLICIES = {"random": Random, "round_robin": RoundRobin, "sequential": Sequential}
