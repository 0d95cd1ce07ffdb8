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
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: chessrl-{name}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(f"[chessrl]\n{name} = {name}_plugin\n")
    return {"PYTHONPATH": str(root)}


def test_throwaway_plugin_listed_through_entry_point(tmp_path, cli):
    env = _make_dist(
        tmp_path,
        """
        from chessrl import hookimpl
        from dataclasses import dataclass
        from chessrl.regularisers import Regulariser

        class Zero(Regulariser):
            pass

        @hookimpl
        def chessrl_register_regularisers(register):
            register("zero_reg", Zero)
    """,
    )
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
    env = _make_dist(
        tmp_path,
        """
        from chessrl import hookimpl

        @hookimpl
        def chessrl_register_gmaes(register):
            pass
    """,
    )
    res = cli("plugins", env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "plugin 'throwaway' implements unknown hook 'chessrl_register_gmaes'" in lines[0]


def test_exception_in_plugin_names_the_plugin(tmp_path, cli):
    env = _make_dist(
        tmp_path,
        """
        from chessrl import hookimpl

        @hookimpl
        def chessrl_register_games(register):
            raise RuntimeError("boom")
    """,
    )
    res = cli("plugins", env=env)
    assert res.returncode == 1
    assert (
        "plugin 'throwaway' failed in hook chessrl_register_games: RuntimeError: boom" in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_trace_prints_every_hook_call(cli):
    res = cli("plugins", env={"CHESSRL_TRACE_PLUGINS": "1"})
    assert res.returncode == 0
    trace = [line for line in res.stderr.splitlines() if line.startswith("[chessrl trace]")]
    assert any("chessrl_register_commands" in line and "ms" in line for line in trace)
    quiet = cli("plugins")
    assert "[chessrl trace]" not in quiet.stderr


def test_call_hook_reraises_with_plugin_name():
    pm = pluginmanager.new_plugin_manager()

    class Bad:
        @hookimpl
        def chessrl_step_end(self, metrics, step):
            raise ValueError("nope")

    pm.register(Bad(), name="bad_plugin")
    with pytest.raises(
        PluginError,
        match="plugin 'bad_plugin' failed in hook chessrl_step_end: ValueError: nope",
    ):
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
    env = _make_dist(
        tmp_path,
        """
        from chessrl import hookimpl

        def helper():
            raise RuntimeError("boom")

        @hookimpl
        def chessrl_register_games(register):
            helper()
    """,
    )
    if switch == "env":
        env["CHESSRL_TRACEBACK"] = "1"
    res = cli(
        "plugins", *(switch if isinstance(switch, list) else []), env=env
    )  # the flag after the command
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "chessrl: error: plugin 'throwaway' failed in hook chessrl_register_games: "
        "RuntimeError: boom"
    )
    if switch == []:
        assert (
            "Traceback" not in res.stderr
            and "rerun with --traceback or CHESSRL_TRACEBACK=1" in last
        )
    else:
        assert (
            "Traceback (most recent call last)" in res.stderr
            and 'raise RuntimeError("boom")' in res.stderr
        )
        assert "throwaway_plugin.py" in res.stderr and "in helper" in res.stderr


# --- run hooks through pluggy's own calling ----------------------------------------------


class _Reports:
    """A run plugin reporting its own name and recording the order it was called in."""

    calls: list[str] = []

    def __init__(self, name):
        self.name = name

    @hookimpl
    def chessrl_step_end(self, metrics, step):
        self.calls.append(self.name)
        return self.name


def test_run_hooks_are_called_in_config_order_through_pluggy():
    """pluggy calls the last registered first; register_in_call_order registers in reverse, so
    the call order (the side effects) and the results are the config order."""
    _Reports.calls = []
    pm = pluginmanager.new_plugin_manager()
    pluginmanager.register_in_call_order(pm, [(n, _Reports(n)) for n in ("a", "b", "c")])
    assert pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=1) == [
        ("a", "a"),
        ("b", "b"),
        ("c", "c"),
    ]
    assert _Reports.calls == ["a", "b", "c"]
    assert pm.hook.chessrl_step_end(metrics={}, step=1) == [
        "a",
        "b",
        "c",
    ]  # pluggy's own call


def test_a_third_party_hookwrapper_runs_around_a_run_hook():
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def chessrl_step_end(self, metrics, step):
            seen.append(("before", step))
            result = yield
            seen.append(("after", list(result)))
            return [r.upper() for r in result]  # replaced one for one: names are kept

    class First:
        @hookimpl(tryfirst=True)
        def chessrl_step_end(self):
            return "first"

    _Reports.calls = []
    pm = pluginmanager.new_plugin_manager()
    pluginmanager.register_in_call_order(
        pm,
        [
            ("a", _Reports("a")),
            ("wrap", Wrapper()),
            ("b", _Reports("b")),
            ("first", First()),
        ],
    )
    got = pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=7)
    assert got == [("first", "FIRST"), ("a", "A"), ("b", "B")]
    assert seen == [("before", 7), ("after", ["first", "a", "b"])]


def test_an_exception_in_a_hookwrapper_names_the_wrapper():
    class Wrapper:
        @hookimpl(wrapper=True)
        def chessrl_step_end(self):
            yield
            raise RuntimeError("after the call")

    pm = pluginmanager.new_plugin_manager()
    pluginmanager.register_in_call_order(pm, [("a", _Reports("a")), ("wrap", Wrapper())])
    with pytest.raises(
        PluginError,
        match="plugin 'wrap' failed in hook chessrl_step_end: RuntimeError: after the call",
    ):
        pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=1)


def test_a_user_error_in_a_plugin_passes_unchanged():
    from chessrl.errors import UserError

    class Bad:
        @hookimpl
        def chessrl_step_end(self):
            raise UserError("plugins.bad: fix me")

    pm = pluginmanager.new_plugin_manager()
    pm.register(Bad(), name="bad")
    with pytest.raises(UserError, match="^plugins.bad: fix me$"):
        pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=1)


def test_tracing_is_pluggys_call_monitoring():
    lines = []
    pm = pluginmanager.new_plugin_manager()
    pluginmanager.register_in_call_order(pm, [("a", _Reports("a")), ("b", _Reports("b"))])
    undo = pluginmanager.trace_hook_calls(pm, lines.append)
    pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=1)
    undo()
    pluginmanager.call_hook(pm, "chessrl_step_end", metrics={}, step=2)
    assert len(lines) == 1
    assert lines[0].startswith("[chessrl trace] chessrl_step_end plugins=a,b ")
    assert lines[0].endswith(" ms")


def test_discovery_keeps_registration_order_and_names_each_registrar(register_plugin):
    class One:
        @staticmethod
        @hookimpl
        def chessrl_register_regularisers(register):
            register("reg_one", object)

    class Two:
        @staticmethod
        @hookimpl
        def chessrl_register_regularisers(register):
            register("reg_two", object)

    register_plugin(One, "one_mod")
    register_plugin(Two, "two_mod")
    regs = pluginmanager.regularisers()
    assert regs["reg_one"].plugin == "one_mod" and regs["reg_two"].plugin == "two_mod"
    names = list(regs)
    assert names.index("reg_one") < names.index("reg_two")
