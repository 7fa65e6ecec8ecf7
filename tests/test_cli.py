"""Config models and the dotted-flag CLI: parsing, errors, help and YAML round trip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from sjc_dsds.cli import build_config, flag_table_markdown, help_text, iter_flags, main, parse_args
from sjc_dsds.config import SJCConfig, dump_config, load_config_text
from sjc_dsds.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_keep_sjc_and_dsds_script_values() -> None:
    cfg = SJCConfig()
    # Spec appendix 1 / decision 1: the authors' SJC + D-SDS script defaults.
    assert (cfg.lr, cfg.n_steps, cfg.var_red, cfg.depth_weight) == (0.05, 10000, True, 0)
    assert (cfg.emptiness_scale, cfg.emptiness_weight) == (10, 10000)
    assert (cfg.emptiness_step, cfg.emptiness_multiplier) == (0.5, 20.0)
    assert (cfg.score_thres, cfg.score_dynamic, cfg.score_thres_start) == (8.0, True, 0.25)
    assert (cfg.sd.variant, cfg.sd.scale, cfg.sd.precision) == ("v1", 100.0, "fp16")
    assert cfg.sd.prompt == "A high quality photo of a delicious burger"
    assert (cfg.vox.grid_size, cfg.vox.c, cfg.vox.model_type) == ((100, 100, 100), 4, "V_SD")
    assert (cfg.vox.bbox_len, cfg.vox.step_ratio, cfg.vox.density_shift) == (1.0, 0.5, -1.0)
    assert (cfg.vox.blend_bg_texture, cfg.vox.bg_texture_hw) == (True, 4)
    assert (cfg.pose.rend_hw, cfg.pose.FoV, cfg.pose.R) == (64, 60.0, 1.5)


def test_dotted_flags_map_onto_nested_groups() -> None:
    parsed = parse_args(
        ["--sd.prompt", "a colorful toucan", "--vox.grid_size", "64", "--score_dynamic", "false"]
        + ["--n_steps=1e4", "--lr", "1", "--lm.candidate_ids", "1,2", "--sd.model_id", "None"]
    )
    cfg = build_config(parsed.overrides)
    assert cfg.sd.prompt == "a colorful toucan"
    assert cfg.vox.grid_size == (64, 64, 64)
    assert cfg.score_dynamic is False
    assert cfg.n_steps == 10000 and isinstance(cfg.n_steps, int)
    assert cfg.lr == 1.0
    assert cfg.lm.candidate_ids == (1, 2)
    assert cfg.sd.model_id is None


@pytest.mark.parametrize("text,expected", [("True", True), ("true", True), ("1", True)])
def test_booleans_accept_sjc_spellings(text: str, expected: bool) -> None:
    assert build_config({"var_red": text}).var_red is expected
    assert build_config({"var_red": "False"}).var_red is False
    assert build_config({"var_red": "0"}).var_red is False


def test_grid_size_accepts_three_sides() -> None:
    assert build_config({"vox.grid_size": "64,32,16"}).vox.grid_size == (64, 32, 16)


def test_unknown_flag_suggests_closest() -> None:
    expected = r"unknown flag --sd\.promt \(did you mean --sd\.prompt\?\)"
    with pytest.raises(ConfigError, match=expected):
        parse_args(["--sd.promt", "x"])


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("n_steps", "0", r"--n_steps must be > 0 \(got '0'\)"),
        ("lr", "-1", r"--lr must be > 0"),
        ("vox.grid_size", "1", r"--vox.grid_size must have every side in 2..1024"),
        ("sd.variant", "v3", r"--sd.variant must be one of v1, v2 or v2_highres"),
        ("score_dynamic", "maybe", r"--score_dynamic must be True/False"),
        ("n_steps", "ten", r"--n_steps must be an integer"),
    ],
)
def test_bad_values_name_the_flag_and_what_is_allowed(flag: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({flag: value})


def test_family_decides_channels_and_conflicts_fail() -> None:
    assert build_config({"family": "toy"}).vox.c == 3
    assert build_config({"family": "toy"}).vox.model_type == "V_SJC"
    with pytest.raises(ConfigError, match=r"--vox.c must be 4 with --family sd \(got 3\)"):
        build_config({"vox.c": "3"})


def test_yaml_round_trip_is_identical() -> None:
    cfg = build_config({"sd.prompt": "a toucan", "vox.grid_size": "8,9,10", "seed": "3"})
    assert load_config_text(dump_config(cfg)) == cfg
    assert load_config_text(dump_config(SJCConfig())) == SJCConfig()


def test_config_file_is_overridden_by_flags(tmp_path: Path) -> None:
    saved = build_config({"sd.prompt": "a toucan", "n_steps": "50", "seed": "7"})
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(saved))
    from sjc_dsds.cli import resolve

    cfg = resolve(parse_args(["--config", str(path), "--n_steps", "60"]))
    assert (cfg.sd.prompt, cfg.n_steps, cfg.seed) == ("a toucan", 60, 7)


def test_main_exits_2_with_one_line_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["--n_steps", "-5", "--out_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --n_steps must be > 0")
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_flag_with_type_and_default() -> None:
    text = help_text()
    for name, _ in iter_flags():
        assert f"--{name} " in text
    assert "--vox.grid_size INT,INT,INT" in text
    assert "[default: 100,100,100]" in text
    assert "--n_steps INT" in text and "[default: 10000; > 0 and <= 10000000]" in text
    assert flag_table_markdown().count("\n") == len(list(iter_flags())) + 1


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from sjc_dsds.cli import main; main(['--help']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--sd.prompt STR" in result.stdout


def test_print_config_prints_reloadable_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sd.prompt", "a toucan", "--print_config"]) == 0
    assert load_config_text(capsys.readouterr().out).sd.prompt == "a toucan"


def test_readme_flag_table_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- flags:start -->\n") + len("<!-- flags:start -->\n")
    end = readme.index("\n<!-- flags:end -->")
    assert readme[start:end] == flag_table_markdown(), "regenerate with flag_table_markdown()"


def test_resume_of_a_missing_run_dir_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--resume", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: --resume {tmp_path / 'nope'}: not a run directory (no config.yaml)\n"
    )
    assert not (tmp_path / "nope").exists()


def _readme_rows() -> dict[str, list[str]]:
    """README flag-table cells by flag, split on unescaped pipes and unescaped."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- flags:start -->\n")
    end = readme.index("\n<!-- flags:end -->")
    rows = {}
    for line in readme[start:end].splitlines()[3:]:
        cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]
        assert cells[0] == cells[-1] == "", f"malformed row {line!r}"
        rows[cells[1].strip("`")] = cells[1:-1]
    return rows


# Fields whose None default is filled in from other flags (their descriptions say how).
DERIVED = {"out_dir", "save_every", "vis_every", "sd.model_id", "vox.model_type", "vox.c"}
DERIVED |= {"vox.blend_bg_texture"}


def _field_default_text(name: str) -> str:
    """The README's spelling of a field's class default ('derived' for DERIVED fields)."""
    model: type[BaseModel] = SJCConfig
    *groups, leaf = name.split(".")
    for group in groups:
        model = model.model_fields[group].annotation
    value = model.model_fields[leaf].get_default(call_default_factory=True)
    if name in DERIVED:
        assert value is None, name
        return "derived"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def test_readme_rows_show_each_fields_full_description_and_default() -> None:
    # Compares the rendered table with the config fields themselves, not with the generator:
    # the old generator cut --lm.template's description at "[MASK]".
    rows = _readme_rows()
    flags = dict(iter_flags())
    assert sorted(rows) == sorted(f"--{name}" for name in flags)
    for name, info in flags.items():
        _, _, default, description = rows[f"--{name}"]
        assert description == info.description, name
        assert default == f"`{_field_default_text(name)}`", name
    assert "[MASK] is replaced by the LM's mask token." in rows["--lm.template"][3]
    assert rows["--lm.mix"][3] == "Weight of P(view|prompt without word) in the ratio's mean."
