"""The command line reads each command's one-line ``HELP`` from its module (one source for the help text)."""

from __future__ import annotations

import importlib

import pytest

from videomask import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_help_comes_from_its_module(name: str, capsys) -> None:
    module = importlib.import_module(f"videomask.commands.{cli.COMMANDS[name]}")
    assert isinstance(module.HELP, str) and module.HELP and "\n" not in module.HELP
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert module.HELP in out


def test_top_level_help_lists_every_command(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for name, module_name in cli.COMMANDS.items():
        assert name in out and importlib.import_module(f"videomask.commands.{module_name}").HELP in out
    assert cli.main(["no-such-command"]) == 2
