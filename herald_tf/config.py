"""Typed configuration of embedding tables, shared by the Keras layer, the scheduler and the PS.

Configs that cross process boundaries are frozen dataclasses that validate in ``__post_init__``
without side effects; ``to_dict``/``from_dict`` give the wire form used at connect time, where a
worker whose table config differs from the PS's is refused.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


@enum.unique
class OptimizerKind(enum.IntEnum):
    """Sparse optimizers; values mirror ``HeraldOptimizerKind`` in kernels/core/optimizer.h."""

    SGD = 0
    ADAGRAD = 1
    ADAM = 2


@enum.unique
class InitializerKind(enum.IntEnum):
    """Row initializers; values mirror ``HeraldInitializerKind`` in kernels/core/initializer.h."""

    UNIFORM = 0
    NORMAL = 1
    ZEROS = 2


@enum.unique
class Combiner(enum.IntEnum):
    """Pooling of multi-hot bags; values mirror ``HeraldCombiner`` in kernels/core/c_api.h."""

    NONE = 0
    SUM = 1
    MEAN = 2
    SQRTN = 3


def _enum_from(kind: type[enum.IntEnum], value: Any, what: str) -> Any:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        try:
            return kind[value.upper()]
        except KeyError:
            pass
    elif isinstance(value, int):
        try:
            return kind(value)
        except ValueError:
            pass
    names = ", ".join(k.name.lower() for k in kind)
    raise ValueError(f"Expected {what} to be one of {names}. Received: {what}={value!r}")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Sparse optimizer of a table.

    Args:
        kind: sgd, adagrad or adam (an ``OptimizerKind`` or its name).
        learning_rate: default learning rate; a step may pass its own (schedules).
        beta1: Adam first-moment decay.
        beta2: Adam second-moment decay.
        epsilon: Adagrad/Adam denominator guard.
        initial_accumulator: Adagrad accumulator of a new row.
    """

    kind: OptimizerKind = OptimizerKind.SGD
    learning_rate: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7
    initial_accumulator: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum_from(OptimizerKind, self.kind, "optimizer"))
        if not self.learning_rate >= 0:
            raise ValueError(
                f"Expected learning_rate >= 0. Received: learning_rate={self.learning_rate}"
            )
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(
                f"Expected 0 <= beta1, beta2 < 1. Received: beta1={self.beta1}, beta2={self.beta2}"
            )
        if not self.epsilon > 0:
            raise ValueError(f"Expected epsilon > 0. Received: epsilon={self.epsilon}")
        if not self.initial_accumulator >= 0:
            raise ValueError(
                "Expected initial_accumulator >= 0. "
                f"Received: initial_accumulator={self.initial_accumulator}"
            )

    @property
    def state_width_per_dim(self) -> int:
        """Optimizer-state floats per value float (0 SGD, 1 Adagrad, 2 Adam)."""
        return {OptimizerKind.SGD: 0, OptimizerKind.ADAGRAD: 1, OptimizerKind.ADAM: 2}[self.kind]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.name.lower()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptimizerConfig:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class InitializerConfig:
    """Deterministic row initializer (kernels/core/initializer.h).

    Args:
        kind: uniform, normal or zeros.
        a: uniform low bound, or normal mean.
        b: uniform high bound, or normal standard deviation.
    """

    kind: InitializerKind = InitializerKind.UNIFORM
    a: float = -0.05
    b: float = 0.05

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _enum_from(InitializerKind, self.kind, "initializer"))
        if self.kind == InitializerKind.UNIFORM and not self.a <= self.b:
            raise ValueError(f"Expected a <= b for a uniform initializer. Received: a={self.a}, "
                             f"b={self.b}")
        if self.kind == InitializerKind.NORMAL and not self.b >= 0:
            raise ValueError(
                f"Expected stddev b >= 0 for a normal initializer. Received: b={self.b}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind.name.lower()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InitializerConfig:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class TableConfig:
    """One embedding table: its name, row width, seed, initializer and sparse optimizer.

    Args:
        name: unique table name.
        dim: embedding width (floats per row).
        seed: table seed of the deterministic initializer.
        initializer: how a row is created on first touch.
        optimizer: the sparse optimizer applied to its rows.
    """

    name: str
    dim: int
    seed: int = 0
    initializer: InitializerConfig = dataclasses.field(default_factory=InitializerConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Expected a non-empty table name. Received: name={self.name!r}")
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise ValueError(f"Expected dim to be a positive int. Received: dim={self.dim!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**64:
            raise ValueError(f"Expected seed in [0, 2**64). Received: seed={self.seed!r}")

    @property
    def state_width(self) -> int:
        """Optimizer-state floats per row."""
        return self.optimizer.state_width_per_dim * self.dim

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "seed": self.seed,
            "initializer": self.initializer.to_dict(),
            "optimizer": self.optimizer.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableConfig:
        return cls(
            name=d["name"],
            dim=d["dim"],
            seed=d.get("seed", 0),
            initializer=InitializerConfig.from_dict(d.get("initializer", {})),
            optimizer=OptimizerConfig.from_dict(d.get("optimizer", {})),
        )
