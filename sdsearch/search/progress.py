"""One rich live view of a running search (Ray's own console output is switched off).

Shows done/target, running, rejected, failed, pruned, best accuracy, front size, elapsed time and
an ETA.
It is a Ray Tune ``Callback`` fed by the searcher's counters, so it reads no storage in the loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from sdsearch.core.pareto import pareto_front

if TYPE_CHECKING:
    from sdsearch.search.searcher import SDOptunaSearch

__all__ = ["LiveView"]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class LiveView(Callback):
    """Ray Tune callback drawing the search's state; ``done_before`` counts trials of earlier runs."""

    def __init__(
        self,
        searcher: SDOptunaSearch,
        *,
        target: int,
        done_before: int,
        title: str,
        console: Console | None = None,
        objectives: tuple[str, ...] | list[str] = ("accuracy",),
    ) -> None:
        from sdsearch.core.metrics import directions, quality_metrics

        self.searcher = searcher
        self.target = target
        self.done_before = done_before
        self.title = title
        self.directions = directions(list(objectives))
        #: where the (first) quality objective stands among the values, wherever the YAML put it
        self.quality = next(i for i, o in enumerate(objectives) if o in quality_metrics())
        self.started = time.time()
        self.running: set[str] = set()
        self.console = console or Console(stderr=True)
        self.live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)

    def __getstate__(self) -> dict[str, Any]:
        """Tuner pickles its callbacks for a restore we never do; the terminal handles cannot travel."""
        return {k: v for k, v in self.__dict__.items() if k not in ("live", "console")}

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self.render())
        self.live.__exit__(*exc)

    # -- Ray callback hooks ------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self.live.update(self.render())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.live.update(self.render())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.live.update(self.render())

    on_trial_error = on_trial_complete

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if iteration % 10 == 0:
            self.live.update(self.render())

    # -- drawing -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        from optuna.trial import TrialState

        outcomes = [o for _, o in self.searcher.completed]
        done = self.done_before + len(outcomes)
        values = [o.values for o in outcomes if o.state == TrialState.COMPLETE and o.values]
        elapsed = time.time() - self.started
        finished_now = len(outcomes)
        remaining = max(0, self.target - done)
        eta = elapsed / finished_now * remaining if finished_now else None
        return {
            "done": done,
            "running": len(self.running),
            "rejected": self.searcher.n_rejected,
            "duplicates": self.searcher.n_duplicates,
            "failed": sum(o.state == TrialState.FAIL for o in outcomes),
            "pruned": sum(o.state == TrialState.PRUNED for o in outcomes),
            "best": max((v[self.quality] for v in values), default=None),
            "front": len(pareto_front(values, self.directions)) if values and self.directions else 0,
            "elapsed": elapsed,
            "eta": eta,
        }

    def render(self) -> Text:
        s = self.stats()
        best = f"{s['best']:.4f}" if s["best"] is not None else "-"
        eta = _duration(s["eta"]) if s["eta"] is not None else "-"
        return Text.assemble(
            (self.title, "bold"),
            f"  done {s['done']}/{self.target} · running {s['running']} · rejected {s['rejected']} · "
            + (f"duplicates {s['duplicates']} · " if s["duplicates"] else "")
            + f"failed {s['failed']} · pruned {s['pruned']} · best accuracy {best} · front {s['front']} · "
            f"elapsed {_duration(s['elapsed'])} · ETA {eta}",
        )
