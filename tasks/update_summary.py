"""What an update run added: new dates, topsStack lines run, new interferograms.

The same facts make the update run's Completed state message (one line) and its Prefect
markdown artifact (every name), keyed by the stack so each stack keeps its own history.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prefect import task


@dataclass(frozen=True)
class UpdateSummary:
    """What one update run of stack ``stack`` added."""

    stack: str
    dates: list[str]  # new acquisition dates, YYYYMMDD
    lines_run: Mapping[str, int]  # topsStack run-file step -> lines run
    interferograms: list[str]  # new pairs, REF_SEC
    precise_orbits: list[str] = field(default_factory=list)  # dates redone, precise orbits
    mintpy: list[str] = field(default_factory=list)  # how MintPy loaded and inverted

    @property
    def total_lines(self) -> int:
        return sum(self.lines_run.values())

    def message(self) -> str:
        """One line for the run's Completed state."""
        parts = [
            f"added {len(self.dates)} date(s): {', '.join(self.dates) or '-'}",
            f"{self.total_lines} topsStack line(s) run",
            f"{len(self.interferograms)} new interferogram(s)",
        ]
        if self.precise_orbits:
            parts.append(
                f"{len(self.precise_orbits)} date(s) redone with precise orbits: "
                + ", ".join(self.precise_orbits)
            )
        return "; ".join(parts)

    def markdown(self) -> str:
        """The artifact: the message, then every step, interferogram and date by name."""
        lines = [f"# Update of stack {self.stack}", "", self.message(), ""]
        lines += ["## New dates", "", *(f"- {d}" for d in self.dates or ["(none)"]), ""]
        if self.precise_orbits:
            lines += ["## Redone with precise orbits", ""]
            lines += [f"- {d}" for d in self.precise_orbits] + [""]
        lines += ["## topsStack lines run", "", "| run-file step | lines run |", "|---|---:|"]
        lines += [f"| {step} | {n} |" for step, n in self.lines_run.items() if n]
        lines += [f"| **total** | **{self.total_lines}** |", ""]
        lines += ["## New interferograms", ""]
        lines += [f"- {p}" for p in self.interferograms or ["(none)"]]
        if self.mintpy:
            lines += ["", "## MintPy", "", *(f"- {note}" for note in self.mintpy)]
        return "\n".join(lines) + "\n"


def artifact_key(stack: str) -> str:
    """The stack's update artifact key (Prefect keys: lowercase letters, digits, dashes)."""
    return "update-" + re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")


def added_interferograms(stack_dir: Path, dates: Collection[str]) -> list[str]:
    """The stack's merged interferograms (``REF_SEC`` folders) that involve one of ``dates``."""
    folder = stack_dir / "merged" / "interferograms"
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if p.is_dir() and set(p.name.split("_")) & set(dates)
    )


@task(name="update-summary")
def publish_update_summary(summary: UpdateSummary) -> str:
    """Prefect task: the markdown artifact of ``summary``; returns its key."""
    from prefect.artifacts import create_markdown_artifact

    key = artifact_key(summary.stack)
    create_markdown_artifact(markdown=summary.markdown(), key=key, description=summary.message())
    return key
