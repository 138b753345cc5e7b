"""Exit names: the one home of ``"final"``, ``"anytime"`` and which stage an exit follows.

A backbone has 4 stages; a shallow exit is named by the stage it follows (``"1"``, ``"2"``,
``"3"``) and the final exit, after the last stage, is ``"final"``. ``deploy.exit`` also takes
``"anytime"``: every exit in one model, stopping at the first confident one.

Example:
    >>> exit_names((3, 1))
    ('1', '3', 'final')
    >>> exit_stage("2"), exit_stage(FINAL)
    (2, 4)
    >>> candidate_name("2", 0.5), split_candidate("final@0.5")
    ('2@0.5', ('final', 0.5))
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ANYTIME",
    "DEPLOY_EXITS",
    "EXIT_NAMES",
    "FINAL",
    "N_STAGES",
    "WIDTH_MARK",
    "candidate_name",
    "exit_names",
    "exit_order",
    "exit_stage",
    "split_candidate",
    "width_text",
]

#: Stages of every backbone; exits may follow stages 1 to N_STAGES - 1.
N_STAGES = 4
#: The exit after the last stage.
FINAL = "final"
#: ``deploy.exit`` of an anytime deployment (every exit, stopping at the first confident one).
ANYTIME = "anytime"
#: Every exit a network can have, in depth order.
EXIT_NAMES: tuple[str, ...] = (*(str(s) for s in range(1, N_STAGES)), FINAL)
#: What ``deploy.exit`` accepts.
DEPLOY_EXITS: tuple[str, ...] = (*EXIT_NAMES, ANYTIME)

#: Joins an exit to the width multiplier of an elastic trial's sub-network: ``final@0.5`` is the final
#: exit of the network at half the trial's width.
WIDTH_MARK = "@"


def exit_names(placement: Iterable[int]) -> tuple[str, ...]:
    """Exit names for a branch placement, in depth order: ``(1, 3)`` -> ``("1", "3", "final")``."""
    return (*(str(s) for s in sorted(set(placement))), FINAL)


def exit_stage(name: str, n_stages: int = N_STAGES) -> int:
    """The 1-based stage an exit follows: ``"2"`` -> 2, ``"final"`` -> the last stage.

    Raises:
        ValueError: ``name`` is not an exit name.
    """
    if name == FINAL:
        return n_stages
    if name.isdigit() and 1 <= int(name) < n_stages:
        return int(name)
    raise ValueError(f"{name!r} is not an exit name (one of {', '.join(EXIT_NAMES)})")


def exit_order(name: str) -> int:
    """A sort key: shallow exits by stage, then any other name, then ``final``, then ``anytime`` (which
    holds them all)."""
    if name.isdigit():
        return int(name)
    return {FINAL: _LAST + 1, ANYTIME: _LAST + 2}.get(name, _LAST)


def width_text(width: float) -> str:
    """A multiplier as text that reads back as the same float: ``1.0`` -> ``1``, ``0.5`` -> ``0.5``."""
    short = f"{width:g}"
    return short if float(short) == width else repr(float(width))


def candidate_name(exit_name: str, width: float | None = None) -> str:
    """A trial's candidate: the exit's name, with ``@multiplier`` for a width of an elastic trial."""
    return exit_name if width is None else f"{exit_name}{WIDTH_MARK}{width_text(width)}"


def split_candidate(name: str) -> tuple[str, float | None]:
    """Inverse of :func:`candidate_name`: ``"2@0.5"`` -> ``("2", 0.5)``, ``"2"`` -> ``("2", None)``.

    Raises:
        ValueError: the width is not a number.
    """
    exit_name, mark, width = name.partition(WIDTH_MARK)
    if not mark:
        return name, None
    try:
        return exit_name, float(width)
    except ValueError:
        raise ValueError(
            f"{name!r}: the width after {WIDTH_MARK!r} must be a number, e.g. final@0.5"
        ) from None


#: Where :func:`exit_order` puts a name that is no exit (a stored record written by hand).
_LAST = 1_000
