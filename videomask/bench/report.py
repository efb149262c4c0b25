"""What every benchmark report starts with."""

from __future__ import annotations


def report_header(title: str, command: str) -> list[str]:
    """The first lines of every benchmark report: its title and the command that made it."""
    return [f"# {title}", "", "Made by:", "", "```", command, "```", ""]
