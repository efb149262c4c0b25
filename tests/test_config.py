"""Run configs: strict YAML loading, typed key=value overrides, path resolution, the CLI's exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from videomask import cli
from videomask.config import RunConfig, config_to_dict, load_config, save_config
from videomask.errors import VideomaskError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_need_a_length():
    with pytest.raises(VideomaskError, match="train.steps or train.epochs"):
        load_config(None)
    cfg = load_config(None, ["train.steps=3"])
    assert isinstance(cfg, RunConfig) and cfg.train.steps == 3 and cfg.mask.ratio == 0.9


def test_overrides_are_typed():
    cfg = load_config(
        None,
        [
            "train.steps=10",
            "optim.lr=1e-3",
            "optim.betas=0.8,0.99",
            "train.clip_grad=1",
            "mask.options.alpha=0.5",
            "mask.options.direction=keep",
            "model.overrides.depth=2",
            "optim.lr=null",
            "mask.mode=token",
            "train.resume=yes",
            "train.tensorboard=0",
        ],
    )
    assert cfg.train.steps == 10 and isinstance(cfg.train.steps, int)
    assert cfg.optim.lr is None  # the later override wins
    assert cfg.optim.betas == (0.8, 0.99)
    assert cfg.train.clip_grad == 1.0 and isinstance(cfg.train.clip_grad, float)
    assert cfg.mask.options == {"alpha": 0.5, "direction": "keep"}
    assert cfg.model.overrides == {"depth": 2}
    assert cfg.mask.mode == "token"
    assert cfg.train.resume is True and cfg.train.tensorboard is False


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("False", False),
        ("yes", True),
        ("NO", False),
        ("1", True),
        ("0", False),
        ("on", True),
        ("off", False),
    ],
)
def test_bool_words(text, value):
    assert load_config(None, ["train.steps=1", f"train.resume={text}"]).train.resume is value


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.stepz=3", ["train.stepz", "allowed in train", "steps", "accum_steps"]),
        ("trian.steps=3", ["trian", "allowed", "train"]),
        ("train.steps=ten", ["train.steps", "int", "ten"]),
        ("train.steps=2.5", ["train.steps", "int"]),
        ("train.resume=maybe", ["train.resume", "true/false"]),
        ("train.precision=fp8", ["train.precision", "fp32", "bf16"]),
        ("optim.lr=fast", ["optim.lr", "float"]),
        ("mask.ratio=1.5", ["mask.ratio", "(0, 1)"]),
        ("train.steps", ["section.key=value"]),
        ("train.steps.x=1", ["no sub-key"]),
    ],
)
def test_bad_override_is_one_line_error(override, words):
    with pytest.raises(VideomaskError) as err:
        load_config(None, ["train.steps=1", override])
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"train": {"steps": 1, "bogus": 2}}, ["train.bogus", "allowed in train"]),
        ({"trainer": {"steps": 1}}, ["trainer", "allowed"]),
        ({"train": {"steps": "many"}}, ["train.steps", "int"]),
        ({"train": {"steps": 1, "resume": "sometimes"}}, ["train.resume"]),
        ({"train": {"steps": 1}, "optim": {"betas": [0.9]}}, ["optim.betas"]),
        ({"train": {"steps": 1}, "mask": {"options": [1, 2]}}, ["mask.options", "dict"]),
        ({"train": {"steps": 1}, "data": 3}, ["data", "mapping"]),
    ],
)
def test_bad_file_is_one_line_error(tmp_path, raw, words):
    path = write(tmp_path / "bad.yaml", raw)
    with pytest.raises(VideomaskError) as err:
        load_config(path)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_relative_paths(tmp_path, monkeypatch):
    """Paths in the file resolve against the file's folder; command-line paths against the cwd."""
    path = write(
        tmp_path / "cfgs" / "run.yaml",
        {
            "run": {"out_dir": "../runs/a"},
            "data": {"path": "videos"},
            "train": {"steps": 1},
            "mask": {"name": "difference", "options": {"stats": "s.safetensors", "alpha": 0.5}},
        },
    )
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert cfg.run.out_dir == str(tmp_path / "runs" / "a")
    assert cfg.data.path == str(tmp_path / "cfgs" / "videos")
    assert cfg.mask.options == {"stats": str(tmp_path / "cfgs" / "s.safetensors"), "alpha": 0.5}
    cfg = load_config(path, ["data.path=clips", "mask.options.stats=t.safetensors"])
    assert cfg.data.path == str(elsewhere / "clips")
    assert cfg.mask.options["stats"] == str(elsewhere / "t.safetensors")


def test_save_config_round_trip(tmp_path):
    cfg = load_config(None, ["train.steps=7", "optim.betas=0.9,0.98", "mask.options.alpha=0.25", "data.path=v"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    again = load_config(tmp_path / "out" / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == config_to_dict(cfg)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("pretrain_*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.train.steps > 0 or cfg.train.epochs > 0
    assert Path(cfg.run.out_dir).is_absolute()


def test_cli_bad_key_exits_2_with_one_line(tmp_path, capsys):
    path = write(tmp_path / "c.yaml", {"train": {"steps": 1, "lerning_rate": 0.1}})
    assert cli.main(["pretrain", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("videomask pretrain: error:") and "train.lerning_rate" in err
    assert cli.main(["pretrain", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    good = write(tmp_path / "g.yaml", {"train": {"steps": 1}})
    assert cli.main(["pretrain", "--config", str(good), "train.steps=abc"]) == 2
    assert "train.steps" in capsys.readouterr().err


def test_cli_print_config_applies_overrides(tmp_path, capsys):
    path = write(tmp_path / "c.yaml", {"train": {"steps": 1}})
    assert (
        cli.main(
            ["pretrain", "--config", str(path), "train.steps=42", "mask.name=random", "--resume", "--print-config"]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (
        printed["train"]["steps"] == 42 and printed["mask"]["name"] == "random" and printed["train"]["resume"] is True
    )


def test_extra_sections_only_when_named(tmp_path):
    path = write(tmp_path / "d.yaml", {"demo": {"source_steps": 3}, "train": {"steps": 2}})
    with pytest.raises(VideomaskError, match="unknown config section 'demo'"):
        load_config(path)
    assert load_config(path, extra_sections=("demo",)).train.steps == 2


def test_demo_config_loads_with_its_extra_section():
    path = CONFIGS / "demo.yaml"
    if not path.is_file():
        pytest.skip("configs/demo.yaml not written yet")
    cfg = load_config(path, extra_sections=("demo",))
    assert cfg.train.steps > 0
