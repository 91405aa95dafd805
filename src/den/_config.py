"""Validated configurations: every parameter of den's training is checked here, once.

A configuration is a frozen dataclass whose fields carry a :class:`Rule`.
Building one checks every field and raises a :class:`ValueError` (or
:class:`TypeError`) that names the parameter, the value and what it must be;
:meth:`Config.to_dict` is exactly what ``uns[...]["params"]`` records.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np


class Rule:
    """A check of one parameter; :meth:`check` returns the (normalised) value or raises."""

    text = "valid"

    def check(self, name: str, value):
        raise NotImplementedError

    def fail(self, name: str, value, *, kind: type[Exception] = ValueError):
        msg = f"Invalid {name}={value!r}: it must be {self.text}."
        raise kind(msg)


@dataclass(frozen=True)
class Int(Rule):
    """An integer (not a bool, not a float) in ``[lo, hi]``."""

    lo: int | None = None
    hi: int | None = None

    @property
    def text(self) -> str:
        if self.hi is None:
            return "an integer" + ("" if self.lo is None else f" >= {self.lo}")
        return f"an integer in [{self.lo}, {self.hi}]"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            self.fail(name, value, kind=TypeError)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            self.fail(name, value)
        return int(value)


@dataclass(frozen=True)
class Float(Rule):
    """A finite real number (ints accepted, bools not) in an interval; ``open_lo`` excludes ``lo``."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False

    @property
    def text(self) -> str:
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
            return f"a number in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"a finite number {'>' if self.open_lo else '>='} {self.lo:g}"
        return "a finite number"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(name, value, kind=TypeError)
        v = float(value)
        if not math.isfinite(v):
            self.fail(name, value)
        if self.lo is not None and (v < self.lo or (self.open_lo and v == self.lo)):
            self.fail(name, value)
        if self.hi is not None and (v > self.hi or (self.open_hi and v == self.hi)):
            self.fail(name, value)
        return v


@dataclass(frozen=True)
class Choice(Rule):
    """One of a fixed set of strings."""

    options: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, name, value):
        if not isinstance(value, str) or value not in self.options:
            self.fail(name, value)
        return value


@dataclass(frozen=True)
class Optional(Rule):
    """``None`` or a value passing ``rule``."""

    rule: Rule = field(default_factory=Rule)

    @property
    def text(self) -> str:
        return f"None or {self.rule.text}"

    def check(self, name, value):
        if value is None:
            return None
        try:
            return self.rule.check(name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"Invalid {name}={value!r}: it must be {self.text}.") from None


@dataclass(frozen=True)
class IntSeq(Rule):
    """A sequence (list or tuple) of integers >= ``lo``; stored as a tuple."""

    lo: int = 1

    @property
    def text(self) -> str:
        return f"a list of integers >= {self.lo} (e.g. [128, 128])"

    def check(self, name, value):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            self.fail(name, value, kind=TypeError)
        item = Int(self.lo)
        try:
            return tuple(item.check(name, v) for v in value)
        except (TypeError, ValueError):
            self.fail(name, value)


@dataclass(frozen=True)
class Bool(Rule):
    """``True`` or ``False`` (numpy bools accepted)."""

    text = "True or False"

    def check(self, name, value):
        if not isinstance(value, bool | np.bool_):
            self.fail(name, value, kind=TypeError)
        return bool(value)


@dataclass(frozen=True)
class Device(Rule):
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""

    text = "'auto', 'cpu', 'cuda' or 'cuda:N'"

    def check(self, name, value):
        import torch

        if isinstance(value, torch.device):
            value = str(value)
        ok = isinstance(value, str) and (
            value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
        )
        if not ok:
            self.fail(name, value)
        return value


@dataclass(frozen=True)
class Seed(Rule):
    """An integer seed in ``[0, 2**32 - 1]`` or ``None`` (a fresh seed is drawn and recorded)."""

    text = "an integer in [0, 2**32 - 1] or None"

    def check(self, name, value):
        if value is None:
            return None
        if isinstance(value, np.random.Generator | np.random.RandomState):
            msg = f"Invalid {name}: den takes an integer seed (or None), not a numpy generator; pass e.g. {name}=0."
            raise TypeError(msg)
        try:
            return Int(0, 2**32 - 1).check(name, value)
        except (TypeError, ValueError) as e:
            raise type(e)(f"Invalid {name}={value!r}: it must be {self.text}.") from None


def param(default, rule: Rule, doc: str = ""):
    """A dataclass field with a validation rule."""
    kw = {"default_factory": lambda: default} if isinstance(default, list | dict) else {"default": default}
    return field(metadata={"rule": rule, "doc": doc}, **kw)


class Config:
    """Base of den's configurations: checks every field on construction."""

    def __post_init__(self):
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                object.__setattr__(self, f.name, rule.check(f.name, getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Checks across parameters (subclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain Python values (tuples as lists, real ``None``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_kwargs(cls, **kwargs):
        """Build from keyword arguments, naming unknown ones."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            msg = f"Unknown parameter(s) {unknown} for {cls.__name__}; known: {cls.names()}."
            raise TypeError(msg)
        return cls(**kwargs)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        out = {}
        for f in fields(cls):
            out[f.name] = f.default if f.default is not MISSING else f.default_factory()
        return out


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


# --- the configurations --------------------------------------------------------------------------------------------

LOSSES = ("contrastive", "paper")
ENCODER_NAMES = ("auto", "mlp", "conv")


@dataclass(frozen=True)
class EmbedConfig(Config):
    """How the Siamese network is trained (see :class:`den.DEN` for each parameter)."""

    n_components: int = param(2, Int(1))
    n_neighbors: int = param(15, Int(1))
    n_pcs: int | None = param(50, Optional(Int(1)))
    encoder: str = param("auto", Choice(ENCODER_NAMES))
    hidden: tuple[int, ...] = param((128, 128), IntSeq(1))
    loss: str = param("contrastive", Choice(LOSSES))
    dof: float | None = param(None, Optional(Float(0, open_lo=True)))
    n_far: int = param(128, Int(1))
    n_epochs: int | None = param(None, Optional(Int(1)))
    batch_size: int = param(512, Int(2))
    learning_rate: float = param(2e-2, Float(0, 1, open_lo=True))
    min_dist: float = param(0.0, Float(0))
    input_noise: float = param(0.15, Float(0))
    ignore: float = param(1.0, Float(0, 1, open_lo=True))
    label_weight: float = param(1.0, Float(0))
    label_head: bool = param(True, Bool())
    device: str = param("auto", Device())
    devices: int = param(1, Int(1))
    random_state: int | None = param(0, Seed())

    def check(self) -> None:
        if self.dof is not None and self.loss == "paper":
            msg = f"Invalid dof={self.dof!r}: the paper's loss reads distances with F(1, n_components); pass dof=None."
            raise ValueError(msg)
        if self.ignore < 1 and self.loss != "paper":
            msg = f"Invalid ignore={self.ignore!r}: dropping terms is part of the paper's loss only; pass loss='paper' or ignore=1."
            raise ValueError(msg)


@dataclass(frozen=True)
class ClusterConfig(Config):
    """How clusters are found and learnt (see :func:`den.tl.cluster` for each parameter)."""

    n_clusters: int | None = param(None, Optional(Int(1)))
    n_neighbors: int = param(15, Int(2))
    resolution: float = param(1.0, Float(0, open_lo=True))
    gamma: float = param(1.5, Float(0, open_lo=True))
    max_clusters: int = param(40, Int(2))
    min_cluster_size: int | None = param(None, Optional(Int(1)))
    head_epochs: int = param(30, Int(1))
    finetune_epochs: int = param(10, Int(0))
    batch_size: int = param(512, Int(2))
    device: str = param("auto", Device())
    random_state: int | None = param(0, Seed())
