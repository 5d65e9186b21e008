"""The ``--prompt`` syntax: a user's box or points prompt as text (flags, the config file), read and
written back. A malformed prompt is an ``InvalidValue``, which the options turn into one ConfigError line
naming the flag or key."""

from __future__ import annotations

import typing
from collections.abc import Iterable

from engine.errors import ConfigError

if typing.TYPE_CHECKING:
    from engine.types import UserPrompt

PROMPT_SYNTAX = "ID:X1,Y1,X2,Y2 or ID:point=X,Y[,LABEL]"


class InvalidValue(Exception):
    """A value an option cannot take: why (``reason``) and what it could be (``allowed``)."""

    def __init__(self, reason: str, allowed: str) -> None:
        super().__init__(reason)
        self.reason, self.allowed = reason, allowed


def parse_prompt(text: str) -> UserPrompt:
    """One ``--prompt``: ``ID:X1,Y1,X2,Y2`` or ``ID:box=X1,Y1,X2,Y2`` (a box), ``ID:point=X,Y[,LABEL]``
    (a point, LABEL 1 foreground, the default, or 0 background); parts for one ID may also be joined by
    ``;`` (``1:point=10,20;point=40,20,0``). Frame pixels; the prompt is checked for form here and
    against the frame once the source is open."""
    from engine.types import UserPrompt

    try:
        obj, _, rest = text.partition(":")
        obj_id = int(obj)
        box, points, labels = None, [], []
        for part in rest.split(";"):
            kind, eq, numbers = part.strip().rpartition("=")
            values = [float(v) for v in numbers.split(",")]
            if kind in ("", "box") and (eq or not kind) and len(values) == 4 and box is None:
                box = tuple(values)
            elif kind == "point" and len(values) in (2, 3) and values[2:] in ([], [0.0], [1.0]):
                points.append((values[0], values[1]))
                labels.append(int(values[2]) if len(values) == 3 else 1)
            else:
                raise ValueError(part)
        if obj_id < 1:
            raise ValueError(obj)
    except ValueError:
        raise InvalidValue(f"{text!r} is not {PROMPT_SYNTAX} (e.g. 1:10,20,200,240 or 2:point=120,80)",
                       PROMPT_SYNTAX) from None
    try:
        return UserPrompt(obj_id=obj_id, box=box, points=tuple(points), labels=tuple(labels))
    except ConfigError as exc:
        raise InvalidValue(f"{text!r}: {exc}", PROMPT_SYNTAX) from None


def format_prompt(prompt: UserPrompt) -> str:
    """The ``--prompt`` text ``parse_prompt`` reads back to ``prompt``."""
    parts = [] if prompt.box is None else ["box=" + ",".join(map(number_text, prompt.box))]
    parts += [f"point={number_text(x)},{number_text(y)},{label}" for (x, y), label in zip(prompt.points, prompt.labels)]
    return f"{prompt.obj_id}:{';'.join(parts)}"


def merge_prompts(prompts: Iterable[UserPrompt]) -> tuple[UserPrompt, ...]:
    """Prompts for one id joined into one (its points in order, at most one box), in the order each id
    first appears."""
    from engine.types import UserPrompt

    joined: dict[int, UserPrompt] = {}
    for p in prompts:
        if p.obj_id is None or p.refine:
            raise InvalidValue(f"{p!r} is not a prompt with an id to start", PROMPT_SYNTAX)
        before = joined.get(p.obj_id)
        if before is not None and before.box is not None and p.box is not None:
            raise InvalidValue(f"object {p.obj_id} has two boxes; give one box and any points", PROMPT_SYNTAX)
        if before is not None:
            p = UserPrompt(obj_id=p.obj_id, box=before.box or p.box, points=before.points + p.points,
                           labels=before.labels + p.labels)
        joined[p.obj_id] = p
    return tuple(joined.values())


def prompt_value(value) -> UserPrompt:
    """A prompt given from Python: a ``UserPrompt`` or an ``(id, box)`` pair."""
    from engine.types import UserPrompt

    if isinstance(value, UserPrompt):
        return value
    try:
        obj, box = value
        return parse_prompt(f"{int(obj)}:{','.join(str(float(v)) for v in box)}")
    except (TypeError, ValueError):
        raise InvalidValue(f"{value!r} is not {PROMPT_SYNTAX}", PROMPT_SYNTAX) from None


def number_text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
