"""Plugin discovery through real entry points, hook validation, tracing, errors by plugin name."""

import json
import textwrap

import pytest

from chessrl import hookimpl, pluginmanager
from chessrl.errors import PluginError


def _make_dist(root, module_source: str, name: str = "throwaway", version: str = "9.8.7"):
    """An installed distribution on a path entry: a module plus a dist-info with entry points."""
    (root / f"{name}_plugin.py").write_text(textwrap.dedent(module_source))
    info = root / f"chessrl_{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: chessrl-{name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[chessrl]\n{name} = {name}_plugin\n")
    return {"PYTHONPATH": str(root)}


def test_throwaway_plugin_listed_through_entry_point(tmp_path, cli):
    env = _make_dist(tmp_path, """
        from chessrl import hookimpl
        from dataclasses import dataclass
        from chessrl.regularisers import Regulariser

        class Zero(Regulariser):
            pass

        @hookimpl
        def chessrl_register_regularisers(register):
            register("zero_reg", Zero)
    """)
    res = cli("plugins", "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["throwaway"]["version"] == "9.8.7"
    assert rows["throwaway"]["distribution"] == "chessrl-throwaway"
    assert rows["throwaway"]["regularisers"] == ["zero_reg"]
    assert "chessrl_register_regularisers" in rows["throwaway"]["hooks"]
    # built-ins arrive through the very same path
    assert rows["tictactoe"]["distribution"] == "chessrl"
    assert "tictactoe" in rows["tictactoe"]["games"]
    text = cli("plugins", env=env)
    assert text.returncode == 0 and "throwaway" in text.stdout and "9.8.7" in text.stdout


def test_unknown_hook_is_one_clear_line(tmp_path, cli):
    env = _make_dist(tmp_path, """
        from chessrl import hookimpl

        @hookimpl
        def chessrl_register_gmaes(register):
            pass
    """)
    res = cli("plugins", env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "plugin 'throwaway' implements unknown hook 'chessrl_register_gmaes'" in lines[0]


def test_exception_in_plugin_names_the_plugin(tmp_path, cli):
    env = _make_dist(tmp_path, """
        from chessrl import hookimpl

        @hookimpl
        def chessrl_register_games(register):
            raise RuntimeError("boom")
    """)
    res = cli("plugins", env=env)
    assert res.returncode == 1
    assert "plugin 'throwaway' failed in hook chessrl_register_games: RuntimeError: boom" in res.stderr
    assert "Traceback" not in res.stderr


def test_trace_prints_every_hook_call(cli):
    res = cli("plugins", env={"CHESSRL_TRACE_PLUGINS": "1"})
    assert res.returncode == 0
    trace = [l for l in res.stderr.splitlines() if l.startswith("[chessrl trace]")]
    assert any("chessrl_register_commands" in l and "ms" in l for l in trace)
    quiet = cli("plugins")
    assert "[chessrl trace]" not in quiet.stderr


def test_call_hook_reraises_with_plugin_name():
    pm = pluginmanager.new_plugin_manager()

    class Bad:
        @hookimpl
        def chessrl_step_end(self, metrics, step):
            raise ValueError("nope")

    pm.register(Bad(), name="bad_plugin")
    with pytest.raises(PluginError, match="plugin 'bad_plugin' failed in hook chessrl_step_end: ValueError: nope"):
        pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=1)


def test_register_plugin_fixture_adds_and_removes(register_plugin):
    class Mod:
        @staticmethod
        @hookimpl
        def chessrl_register_regularisers(register):
            register("tmp_reg", object)

    register_plugin(Mod, "tmp_mod")
    assert "tmp_reg" in pluginmanager.regularisers()


def test_registry_forgets_fixture_plugin():
    assert "tmp_reg" not in pluginmanager.regularisers()


@pytest.mark.parametrize("switch", [["--traceback"], [], "env"], ids=["flag", "none", "env"])
def test_a_plugins_traceback_is_shown_on_request(tmp_path, cli, switch):
    env = _make_dist(tmp_path, """
        from chessrl import hookimpl

        def helper():
            raise RuntimeError("boom")

        @hookimpl
        def chessrl_register_games(register):
            helper()
    """)
    if switch == "env":
        env["CHESSRL_TRACEBACK"] = "1"
    res = cli("plugins", *(switch if isinstance(switch, list) else []), env=env)  # the flag after the command
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("chessrl: error: plugin 'throwaway' failed in hook chessrl_register_games: RuntimeError: boom")
    if switch == []:
        assert "Traceback" not in res.stderr and "rerun with --traceback or CHESSRL_TRACEBACK=1" in last
    else:
        assert "Traceback (most recent call last)" in res.stderr and 'raise RuntimeError("boom")' in res.stderr
        assert "throwaway_plugin.py" in res.stderr and "in helper" in res.stderr
