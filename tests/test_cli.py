"""The command line reads each command's one-line ``HELP`` from its module (one source for the help text)."""

from __future__ import annotations

import importlib
import io
import sys

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


def test_version_flag_prints_the_installed_version(capsys) -> None:
    import importlib.metadata

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"videomask {importlib.metadata.version('videomask')}"


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_option_has_a_help_text(name: str) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    importlib.import_module(f"videomask.commands.{cli.COMMANDS[name]}").add_arguments(parser)
    bare = [a.option_strings or [a.dest] for a in parser._actions if a.help is None]
    assert not bare, f"videomask {name}: options without help: {bare}"


def test_mask_ratio_range_reads_the_same_in_every_command(tmp_path, capsys) -> None:
    """pretrain (mask.ratio) and show-masks (--ratio) reject 1.5 with the same range, on one line."""
    from clips import make_index_clip

    from videomask.config import load_config
    from videomask.errors import VideomaskError

    with pytest.raises(VideomaskError) as from_config:
        load_config(None, ["mask.ratio=1.5", "train.steps=1"])
    video = make_index_clip(tmp_path / "clip.mp4", 8, 32, 32)
    assert (
        cli.main(["show-masks", str(video), "--masker", "tube", "--ratio", "1.5", "-o", str(tmp_path / "m.gif")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(0, 1)" in err[0] and "(0, 1)" in str(from_config.value)
    assert err[0].split("must be in ")[1] == str(from_config.value).split("must be in ")[1]
    assert not (tmp_path / "m.gif").exists()


class _FailingItems:
    """A dataset whose every item is a user error (as VideoDataset's 'every video failed to decode')."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        from videomask.errors import VideomaskError

        raise VideomaskError("every video failed to decode (2 videos)")


def test_an_error_from_a_dataloader_worker_reads_as_one_line() -> None:
    import torch.utils.data

    from videomask.errors import VideomaskError, one_line

    loader = torch.utils.data.DataLoader(_FailingItems(), batch_size=1, num_workers=1)
    with pytest.raises(VideomaskError) as caught:
        next(iter(loader))
    assert "\n" in str(caught.value)  # torch puts the worker's traceback into the message
    assert one_line(caught.value) == "every video failed to decode (2 videos)"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_warning_never_lands_on_the_progress_bar_line(monkeypatch) -> None:
    """A skipped video's warning line, printed while the training bar is drawn, starts a line of its own."""
    import logging

    from tqdm import tqdm

    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    logger = logging.getLogger("videomask")
    handlers, propagate = list(logger.handlers), logger.propagate
    try:
        cli.install_log_handler()
        bar = tqdm(total=4, desc="pretrain", file=stream, mininterval=0)
        bar.update(1)
        logging.getLogger("videomask.data").warning("videomask: skipping video x.mp4: cannot open video")
        bar.close()
    finally:
        logger.handlers[:], logger.propagate = handlers, propagate
    text = stream.getvalue()
    before = text.split("videomask: skipping")[0]
    assert before.endswith(("\r", "\n")), repr(text)  # the bar was cleared first
    assert "videomask: skipping video x.mp4: cannot open video\n" in text


def test_a_worker_process_clears_the_terminal_line_before_its_warning(monkeypatch) -> None:
    """In a DataLoader worker (another process: the bar is out of reach) the line is cleared, then written."""
    import logging

    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = cli.BarSafeHandler()
    handler.pid = -1  # as seen from a forked worker
    handler.emit(logging.LogRecord("videomask.data", logging.WARNING, __file__, 1, "skipping x.mp4", None, None))
    assert stream.getvalue() == "\r\x1b[Kskipping x.mp4\n"
