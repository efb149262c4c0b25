"""``videomask info`` on folders, single videos and list files, and its one-line errors."""

from __future__ import annotations

from helpers_data import write_list

from videomask.cli import main as cli_main


def test_info_reports_videos_grid_and_skips(mixed_dir, capsys):
    code = cli_main(
        ["info", str(mixed_dir), "--num-frames", "4", "--sampling-rate", "2", "--size", "32", "--tubelet", "2", "16"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "token grid 2x2x2 = 8 tokens (4 tubes)" in out
    assert "good1.mp4: 30 frames, 25.000 fps, 1.20 s, 64x64" in out
    assert "[C,T,H,W] 3x4x32x32" in out
    assert "decoded 3 of 9 video(s); skipped 6" in out


def test_info_on_a_single_video_and_a_list(mixed_dir, tmp_path, capsys):
    assert cli_main(["info", str(mixed_dir / "good1.mp4"), "--size", "32", "--num-frames", "4"]) == 0
    assert "decoded 1 of 1 video(s); skipped 0" in capsys.readouterr().out
    listing = write_list(tmp_path / "l.csv", f"path,label\n{mixed_dir / 'good2.mp4'},1\n")
    assert cli_main(["info", str(listing), "--size", "32", "--num-frames", "4"]) == 0
    assert "good2.mp4: 30 frames" in capsys.readouterr().out


def test_info_errors_are_one_line_exit_2(tmp_path, mixed_dir, capsys):
    assert cli_main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such file or folder" in err
    assert cli_main(["info", str(mixed_dir / "bad"), "--size", "32", "--num-frames", "4"]) == 2
    assert "none of the 6 video(s)" in capsys.readouterr().err
    assert cli_main(["info", str(mixed_dir), "--size", "40"]) == 2
    assert "not divisible by the patch" in capsys.readouterr().err
