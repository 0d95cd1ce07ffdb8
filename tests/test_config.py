"""Strict config: each user mistake is one line on stderr and exit code 2, never a traceback."""

import json

import pytest

from chessrl.config import load_config
from chessrl.errors import UserError


def _one_line_exit_2(res):
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[trainer]\nlr = 1e-6\nentopy_coef = 0.1\n", ["unknown key 'trainer.entopy_coef'", ":5:"]),
        ("[rollout]\ntemprature = 1.3\n", ["did you mean 'temperature'?", ":4:"]),
        ('[trainer]\nlr = "fast"\n', ["'trainer.lr' = 'fast'", "expected a number"]),
        ("[rollout]\ngroup_size = 0\n", ["'rollout.group_size' = 0", "expected >= 1"]),
        ('[advantage]\nscale = "sdt"\n', ["'advantage.scale' = 'sdt'", "did you mean 'std'?"]),
        (
            "[plugins.entropy_bonuss]\ncoef = 0.1\n",
            ["plugin 'entropy_bonuss' is not installed", "entropy_bonus"],
        ),
        (
            "[plugins.entropy_bonus]\ncof = 0.1\n",
            ["unknown key 'plugins.entropy_bonus.cof'", "did you mean 'coef'?"],
        ),
        (
            '[env]\nname = "chekers"\n',
            ["'env.name' = 'chekers' is not an installed game", "tictactoe"],
        ),
        ('[env]\nname = "tictactoe"\nstart = 3\n', ["env.start"]),
        ("[policy]\nd_model = 30\nn_heads = 8\n", ["n_heads = 8 must divide d_model = 30"]),
        ('name = "x"\n[trainer\nlr = 1\n', ["invalid TOML", "line 2"]),
    ],
)
def test_config_mistakes(tmp_path, cli, body, expected):
    p = tmp_path / "bad.toml"
    own_env = body.startswith(("[env]", 'name = "x"'))
    p.write_text(body if own_env else '[env]\nname = "tictactoe"\n' + body)
    line = _one_line_exit_2(cli("config", "show", str(p)))
    assert str(p) in line
    for e in expected:
        assert e in line, line


def test_missing_file(cli, tmp_path):
    line = _one_line_exit_2(cli("config", "show", str(tmp_path / "nope.toml")))
    assert "no such file" in line


def test_bad_set_override(cli, tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text('[env]\nname = "tictactoe"\n')
    line = _one_line_exit_2(cli("config", "show", str(p), "--set", "trainer.lr=abc"))
    assert "'trainer.lr' = 'abc'" in line


def test_a_cross_field_mistake_names_the_set_item_that_may_cause_it(cli, tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text('[env]\nname = "tictactoe"\n[policy]\nd_model = 32\nn_heads = 4\n')
    line = _one_line_exit_2(cli("config", "show", str(p), "--set", "policy.n_heads=5"))
    assert f"{p}:3 with --set policy.n_heads=5: policy: n_heads = 5 must divide" in line


@pytest.mark.parametrize(
    "item, expected",
    [
        ("seed=18446744073709551616", "--set seed=18446744073709551616: 'seed' = "),
        ("nosuch.key=1", "--set nosuch.key=1: unknown key 'nosuch'"),
        ("plugins.nope.coef=1", "--set plugins.nope.coef=1: plugin 'nope' is not installed"),
    ],
)
def test_set_items_out_of_range_or_making_new_tables_are_named(
    cli_in_process, tmp_path, item, expected
):
    p = tmp_path / "ok.toml"
    p.write_text('[env]\nname = "tictactoe"\n')
    rc, _, err = cli_in_process("config", "show", str(p), "--set", item)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_mistake_inside_an_inline_table_names_its_line(cli_in_process, tmp_path):
    p = tmp_path / "inline.toml"
    p.write_text('[env]\nname = "tictactoe"\n\n[plugins]\nentropy_bonus = {coef = "x"}\n')
    rc, _, err = cli_in_process("config", "show", str(p))
    assert rc == 2 and f"{p}:5: 'plugins.entropy_bonus.coef' = 'x'" in err, err


def test_a_pretraining_config_given_to_run_says_so(cli_in_process):
    from conftest import REPO

    rc, _, err = cli_in_process("config", "show", str(REPO / "examples" / "pretrain.toml"))
    assert rc == 2 and "a pretraining config" in err and "chessrl pretrain" in err, err


def test_run_with_bad_config_writes_nothing(cli, tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[env]\nname = "tictactoe"\n[trainer]\nstepz = 3\n')
    run_dir = tmp_path / "run"
    _one_line_exit_2(cli("run", str(p), "--run-dir", str(run_dir)))
    assert not run_dir.exists()


def test_overrides_and_resolved_config(tmp_path, cli):
    p = tmp_path / "ok.toml"
    p.write_text('[env]\nname = "tictactoe"\n[plugins.entropy_bonus]\ncoef = 0.5\n')
    cfg = load_config(
        p, ["trainer.lr=3e-6", "plugins.entropy_bonus.coef=0.01", "rollout.opponent=engine"]
    )
    assert cfg.trainer.lr == 3e-6 and cfg.plugins["entropy_bonus"].coef == 0.01
    assert cfg.rollout.opponent == "engine"
    res = cli("config", "show", str(p), "--json", "--set", "trainer.lr=3e-6")
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert d["trainer"]["lr"] == 3e-6 and d["plugins"]["entropy_bonus"]["coef"] == 0.5
    assert d["env"]["name"] == "tictactoe"


def test_resolved_config_round_trips(tmp_path):
    from chessrl.config import config_to_dict, dumps_toml

    p = tmp_path / "ok.toml"
    p.write_text('name = "rt"\n[env]\nname = "tictactoe"\n[plugins.entropy_bonus]\ncoef = 0.02\n')
    cfg = load_config(p, ["trainer.betas=[0.8, 0.9]"])
    q = tmp_path / "resolved.toml"
    q.write_text(dumps_toml(config_to_dict(cfg)))
    assert config_to_dict(load_config(q)) == config_to_dict(cfg)


def test_resolved_config_with_unset_optional_keys_and_odd_strings_reloads(tmp_path):
    """A run's own config.toml reloads when an optional key is unset (adaptive_kl.init) and a
    string holds quotes, backslashes or a newline."""
    from chessrl.config import config_to_dict, dumps_toml

    p = tmp_path / "ok.toml"
    p.write_text(
        'name = "odd \\"name\\" \\\\ x\\n y"\n[env]\nname = "tictactoe"\n'
        "[plugins.kl_penalty]\ncoef = 0.01\n[plugins.adaptive_kl]\ntarget = 0.02\n"
    )
    cfg = load_config(p)
    assert cfg.plugins["adaptive_kl"].init is None and "\n" in cfg.name
    q = tmp_path / "resolved.toml"
    q.write_text(dumps_toml(config_to_dict(cfg)))
    assert config_to_dict(load_config(q)) == config_to_dict(cfg)


def test_user_error_from_python_api(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[env]\nname = "tictactoe"\n[loss]\nclip_low = 1.5\n')
    with pytest.raises(UserError, match="expected < 1"):
        load_config(p)
