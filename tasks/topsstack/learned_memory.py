"""A memory model learned from the stack: each line's measured peak RSS refines the estimate
of the lines of its step still to run.

The registry's model (:func:`~insarflow.tasks.topsstack.steps.estimate_memory_mb`) scales a
step's memory with the bursts and looks of the stack but is a conservative constant per step.
Here every line that ran teaches the ratio peak RSS / model estimate of its step and key kind
(of itself alone where the lines of a kind are different products: :data:`PER_LINE_KINDS`);
the largest ratio seen, times :data:`MARGIN`, then scales the model for the remaining lines of
that step and kind, so a learned reservation follows the stack's bursts and looks as the model
does, and never falls below what a line of the same estimate was measured to need. The ratios
are kept with the stack (:data:`LEARNED_FILE`), so a rerun or an update starts from them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from insarflow.atomic import write_text

#: Where the learned ratios live in a stack directory.
LEARNED_FILE = Path(".insarflow") / "learned_memory.json"
#: Headroom over the largest peak seen (lines of one step differ: reference vs secondary
#: dates, bursts with more valid samples).
MARGIN = 1.5
#: No learned reservation is smaller (interpreter and library start-up of a tiny line).
FLOOR_MB = 100
#: Key kinds whose lines are not alike: each geometry layer merge is a different raster
#: (lat/lon in float64, the shadow mask in bytes; peaks 25-225 MB on one stack), so what one
#: layer used says nothing of the next; such a line learns only for its own rerun or update.
PER_LINE_KINDS = frozenset({"layer"})


def _key(step: str, key_kind: str, key: str) -> str:
    return f"{step}/{key_kind}/{key}" if key_kind in PER_LINE_KINDS else f"{step}/{key_kind}"


@dataclass
class LearnedMemory:
    """Largest peak RSS / model estimate seen, and how many lines taught it, per step and
    key kind."""

    ratios: dict[str, float] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, stack_dir: Path) -> LearnedMemory:
        """What the stack learned so far (nothing when the file is missing or unreadable)."""
        path = stack_dir / LEARNED_FILE
        try:
            data = json.loads(path.read_text())
            return cls(
                {str(k): float(v) for k, v in data["ratios"].items()},
                {str(k): int(v) for k, v in data["lines"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def save(self, stack_dir: Path) -> None:
        path = stack_dir / LEARNED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"ratios": self.ratios, "lines": self.lines}, indent=1, sort_keys=True)
        write_text(path, text + "\n", skip_unchanged=True)

    def observe(self, step: str, key_kind: str, model_mb: int, peak_mb: float, *, key: str) -> bool:
        """Learn from a line (run-file ``key``) that ran; True when the estimate changed."""
        if model_mb <= 0 or peak_mb <= 0:
            return False  # nothing measured
        key = _key(step, key_kind, key)
        self.lines[key] = self.lines.get(key, 0) + 1
        ratio = peak_mb / model_mb
        if ratio <= self.ratios.get(key, 0.0):
            return False
        self.ratios[key] = ratio
        return True

    def estimate_mb(self, step: str, key_kind: str, model_mb: int, *, key: str) -> int:
        """The reservation for a line (run-file ``key``) whose model estimate is ``model_mb``."""
        ratio = self.ratios.get(_key(step, key_kind, key))
        if ratio is None:
            return model_mb
        return max(FLOOR_MB, math.ceil(model_mb * ratio * MARGIN))
