"""The pluggy plugin manager: discovery through entry points, tracing, errors named by plugin.

Built-in games and regularisers are found exactly like third-party ones: through the
``chessrl`` entry-point group. Nothing here imports a game or a regulariser.

Hooks are called by pluggy itself (``pm.hook.<name>(**kwargs)``), so hook wrappers,
``tryfirst``/``trylast`` and pluggy's call monitoring work as pluggy documents them. chessrl
adds two things at registration (:class:`PluginManager`): every hook implementation is guarded
so that an exception inside it is re-raised as :class:`PluginError` naming the plugin, and
each non-None result is noted with the plugin that returned it (:func:`call_hook` returns
``[(plugin, result)]``). pluggy calls the last registered implementation first; the per-run
manager registers the regularisers in reverse TOML order so that they run in TOML order
(:func:`register_in_call_order`).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.metadata
import inspect
import os
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable, Sequence, cast

import pluggy

from chessrl import hookspecs
from chessrl.errors import PluginError, UserError

ENTRY_POINT_GROUP = "chessrl"
TRACE_ENV = "CHESSRL_TRACE_PLUGINS"
TRACEBACK_ENV = "CHESSRL_TRACEBACK"  # also prints a failing plugin import's traceback

_PM: pluggy.PluginManager | None = None


# the plugin whose hook implementation is running (for the discovery hooks' register()), and
# the (hook, plugin, result) notes of the call_hook in progress
_CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "chessrl_plugin", default=None
)
_NOTES: contextvars.ContextVar[list[tuple[str, str, Any]] | None] = contextvars.ContextVar(
    "chessrl_hook_results", default=None
)


def current_plugin() -> str | None:
    """The name of the plugin whose hook implementation is running (None outside hooks)."""
    return _CURRENT.get()


def _guard(function: Callable[..., Any], plugin: str, hook: str) -> Callable[..., Any]:
    """``function`` (a hook implementation of ``plugin``) with its exceptions named by plugin
    and its non-None results noted for :func:`call_hook`. A wrapper (a generator) stays one."""
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _CURRENT.set(plugin)
            try:
                return (yield from function(*args, **kwargs))
            except (UserError, PluginError):
                raise
            except Exception as exc:
                raise PluginError(plugin, hook, exc) from exc
            finally:
                _CURRENT.reset(token)

        return wrapper

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = _CURRENT.set(plugin)
        try:
            result = function(*args, **kwargs)
        except (UserError, PluginError):
            raise
        except Exception as exc:
            raise PluginError(plugin, hook, exc) from exc
        finally:
            _CURRENT.reset(token)
        notes = _NOTES.get()
        if notes is not None and result is not None:
            notes.append((hook, plugin, result))
        return result

    return guarded


class PluginManager(pluggy.PluginManager):
    """pluggy's manager for project ``chessrl``; each hook implementation a plugin brings is
    guarded when it is registered (errors named by plugin, results noted by plugin)."""

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        name = super().register(plugin, name)
        if name is not None:
            for caller in self.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        # HookImpl.function is the public name of the callable pluggy calls
                        impl.function = _guard(impl.function, name, caller.name)  # type: ignore[misc]
        return name


def new_plugin_manager() -> PluginManager:
    """A plugin manager with chessrl's hook specifications and no plugins; with
    ``CHESSRL_TRACE_PLUGINS=1`` it prints every hook call (:func:`trace_hook_calls`)."""
    pm = PluginManager("chessrl")
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV, "") not in ("", "0"):
        trace_hook_calls(pm)
    return pm


def trace_hook_calls(
    pm: pluggy.PluginManager, write: Callable[[str], Any] | None = None
) -> Callable[[], None]:
    """Print each hook call of ``pm`` (pluggy's call monitoring): the hook, its implementing
    plugins in call order and its duration. Returns the function that stops it."""
    write = write or (lambda line: print(line, file=sys.stderr))
    starts: list[float] = []

    def before(hook_name: str, impls: Sequence[Any], kwargs: Any) -> None:
        starts.append(time.perf_counter())

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Any) -> None:
        ms = (time.perf_counter() - starts.pop()) * 1000
        names = ",".join(i.plugin_name for i in reversed(impls)) or "-"  # pluggy calls last first
        write(f"[chessrl trace] {hook_name} plugins={names} {ms:.2f} ms")

    return pm.add_hookcall_monitoring(before, after)


def register_in_call_order(pm: pluggy.PluginManager, plugins: Iterable[tuple[str, Any]]) -> None:
    """Register ``(name, plugin)`` pairs so that pluggy calls them in the given order (it calls
    the last registered first, so they are registered in reverse)."""
    for name, plugin in reversed(list(plugins)):
        pm.register(plugin, name=name)


def check_hooks(pm: pluggy.PluginManager) -> None:
    """Fail with one line when a plugin implements a hook chessrl does not define."""
    for hook_name in sorted(vars(pm.hook)):
        if hook_name.startswith("_"):
            continue
        caller = getattr(pm.hook, hook_name)
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                raise UserError(
                    f"plugin '{impl.plugin_name}' implements unknown hook '{hook_name}'; "
                    f"known hooks: {', '.join(known_hooks())}"
                )


def known_hooks() -> list[str]:
    return sorted(n for n in vars(hookspecs) if n.startswith("chessrl_"))


@dataclass
class BrokenPlugin:
    """An installed plugin whose module failed to import: left out, reported, never fatal
    unless a config asks for it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    error: str  # "ImportError: ..."

    def line(self) -> str:
        dist = f" ({self.distribution} {self.version})" if self.distribution else ""
        return f"plugin '{self.name}'{dist} failed to load: {self.error}"


_BROKEN: dict[str, BrokenPlugin] = {}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager holding every installed plugin module (loaded once).

    A plugin module that fails to import does not stop the others: it is left out, warned
    about once on stderr, listed by ``chessrl plugins`` as broken, and named by the one-line
    error of a config that asks for it (:func:`broken`).
    """
    global _PM
    if _PM is None:
        pm = new_plugin_manager()
        _BROKEN.clear()
        _block_conflicts(pm)
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception:  # a module failed to import: load the rest one by one, noting which fail
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                if pm.has_plugin(ep.name) or ep.name in _BROKEN:
                    continue
                try:
                    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
                except Exception as exc:
                    if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
                        import traceback

                        traceback.print_exception(exc, file=sys.stderr)
                    dist = getattr(ep, "dist", None)
                    first = (str(exc).strip().splitlines() or [""])[0]
                    _BROKEN[ep.name] = BrokenPlugin(
                        ep.name,
                        ep.value,
                        dist.metadata["name"] if dist else None,
                        dist.version if dist else None,
                        f"{type(exc).__name__}: {first}",
                    )
        _drop_shadowed(pm)
        for b in _BROKEN.values():
            print(
                f"chessrl: warning: {b.line()}; it is disabled ('chessrl plugins' lists it)",
                file=sys.stderr,
            )
        check_hooks(pm)
        _PM = pm
    return _PM


def _block_conflicts(pm: pluggy.PluginManager) -> None:
    """Leave out (as broken, naming both) every entry point name that two installed
    distributions register with different modules: pluggy would load whichever comes first on
    ``sys.path`` and skip the other without a word (a third-party ``kl_penalty`` would silently
    replace the built-in one)."""
    seen: dict[str, dict[str, Any]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        seen.setdefault(ep.name, {}).setdefault(ep.value, ep)
    for name, by_module in seen.items():
        if len(by_module) < 2:
            continue
        who = []
        for module, ep in by_module.items():
            dist = getattr(ep, "dist", None)
            who.append(f"{dist.metadata['name'] if dist else '?'} ({module})")
        _BROKEN[name] = BrokenPlugin(
            name,
            " / ".join(by_module),
            None,
            None,
            f"EntryPointConflict: registered by {' and '.join(who)}; uninstall one, or rename "
            "its entry point in its pyproject.toml",
        )
        pm.set_blocked(name)


def _drop_shadowed(pm: pluggy.PluginManager) -> None:
    """Leave out (as broken, with the reason) each plugin whose module was imported as an empty
    namespace package: a folder of the module's name in the current directory or on
    ``sys.path`` (e.g. the package's own source folder) hid the installed module."""
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    for name, plugin in list(pm.list_name_plugin()):
        if getattr(plugin, "__file__", None) is not None or not hasattr(plugin, "__path__"):
            continue
        folders = ", ".join(str(f) for f in list(plugin.__path__)) or "?"
        module = cast(ModuleType, plugin)  # __path__ without __file__: a namespace package
        dist = dists.get(id(plugin))
        pm.unregister(name=name)
        _BROKEN[name] = BrokenPlugin(
            name,
            module.__name__,
            dist.metadata["name"] if dist else None,
            dist.version if dist else None,
            f"module '{module.__name__}' is shadowed by the folder {folders} (an empty namespace "
            f"package, not the installed module); run chessrl from another directory or take that "
            f"folder off "
            f"sys.path/PYTHONPATH",
        )


def broken() -> dict[str, BrokenPlugin]:
    """Installed plugins whose module failed to import, by entry-point name."""
    get_plugin_manager()
    return dict(_BROKEN)


def check_not_broken(name: str, where: str = "") -> None:
    """A config asks for plugin ``name``: if it is installed but broken, one line saying so."""
    b = broken().get(name)
    if b is not None:
        dist = f" ({b.distribution} {b.version})" if b.distribution else ""
        raise UserError(
            f"{where}plugin '{name}'{dist} is installed but failed to load: "
            f"{b.error}; fix that "
            f"import error or uninstall {b.distribution or 'the plugin'}"
        )


def missing_hint(name: str) -> str:
    """What to add to "X is not installed": the broken plugins, one of which may provide X."""
    bad = broken()
    if bad:
        return (
            "; note: "
            + "; ".join(b.line() for b in bad.values())
            + " (it may be the one that provides it)"
        )
    return ""


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests that install a plugin use this)."""
    global _PM
    _PM = None
    _BROKEN.clear()
    _registry_cache.clear()


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call hook ``name`` through pluggy (``pm.hook.<name>(**kwargs)``); return its results as
    ``[(plugin, result)]`` in call order, Nones left out.

    The call order is pluggy's: the last registered first, ``tryfirst``/``trylast`` first and
    last, wrappers around them. The run's regularisers are registered so that this is the
    order of their ``[plugins.*]`` sections (:func:`register_in_call_order`). An exception
    inside a plugin is re-raised as :class:`PluginError` naming the plugin (a ``UserError``
    passes unchanged). A hook wrapper may replace results one for one (each keeps the name of
    the plugin that returned the one it replaced) or leave some out.
    """
    caller = getattr(pm.hook, name)
    notes: list[tuple[str, str, Any]] = []
    token = _NOTES.set(notes)
    try:
        got = caller(**kwargs)
    finally:
        _NOTES.reset(token)
    if caller.spec is not None and caller.spec.opts.get("firstresult"):
        got = [] if got is None else [got]
    returned = [(plugin, res) for hook, plugin, res in notes if hook == name]
    if len(got) == len(returned):
        return [(plugin, res) for (plugin, _), res in zip(returned, got)]
    named = []
    for res in got:  # a wrapper left some out: name the rest by identity
        match = next((i for i, (_, r) in enumerate(returned) if r is res), None)
        if match is None:
            raise TypeError(
                f"hook {name}: a hook wrapper added a result no plugin returned "
                f"({type(res).__name__}); replace results one for one instead"
            )
        named.append(returned.pop(match))
    return named


@dataclass
class Registration:
    name: str
    plugin: str
    obj: Any
    schema: Any = None


_registry_cache: dict[str, dict[str, Registration]] = {}


def _collect(hook: str) -> dict[str, Registration]:
    if hook in _registry_cache:
        return _registry_cache[hook]
    pm = get_plugin_manager()
    calls: list[tuple[str, str, Any, Any]] = []

    def register(name: str, obj: Any, schema: Any = None) -> None:
        calls.append((current_plugin() or "?", name, obj, schema))

    call_hook(pm, hook, register=register)
    # pluggy called the last registered plugin first: back to registration order
    order = {name: i for i, (name, _) in enumerate(pm.list_name_plugin())}
    calls.sort(key=lambda c: order.get(c[0], len(order)))
    found: dict[str, Registration] = {}
    for plugin, name, obj, schema in calls:
        if name in found:
            raise UserError(
                f"plugins '{found[name].plugin}' and '{plugin}' both register "
                f"'{name}'; uninstall one of them"
            )
        found[name] = Registration(name, plugin, obj, schema)
    _registry_cache[hook] = found
    return found


def games() -> dict[str, Registration]:
    """Installed games: name -> Registration(obj=factory, schema=options dataclass)."""
    return _collect("chessrl_register_games")


def regularisers() -> dict[str, Registration]:
    """Installed regularisers: name -> Registration(obj=class with a ``Config`` dataclass)."""
    return _collect("chessrl_register_regularisers")


def evaluators() -> dict[str, Registration]:
    """Games' own ``chessrl eval``: game name -> Registration(obj=run(args) -> exit code,
    schema=add_arguments(argument group))."""
    return _collect("chessrl_register_evaluators")


def _commands_of(pm: pluggy.PluginManager, plugin: str) -> list[str]:
    """The command names plugin ``plugin`` adds, by calling its ``chessrl_register_commands``
    alone on a recorder (each command gets a throwaway parser)."""
    import argparse

    names: list[str] = []

    class Recorder:
        def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
            names.append(name)
            return argparse.ArgumentParser(prog=name)

    for impl in pm.hook.chessrl_register_commands.get_hookimpls():
        if impl.plugin_name == plugin and not impl.hookwrapper and not impl.wrapper:
            try:
                impl.function(subparsers=Recorder())
            except Exception:  # noqa: BLE001 - listing must not fail; the command itself will
                names.append("?")
    return sorted(names)


def plugin_info() -> list[dict[str, Any]]:
    """Name, version, distribution and hooks of every plugin module; ``broken`` is the import
    error of one that failed to load (None for the others)."""
    pm = get_plugin_manager()
    dists = {id(p): d for p, d in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda x: x[0]):
        dist = dists.get(id(plugin))
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append(
            {
                "name": name,
                "version": dist.version if dist else None,
                "distribution": dist.metadata["name"] if dist else None,
                "module": getattr(plugin, "__name__", repr(plugin)),
                "hooks": hooks,
                "games": sorted(r.name for r in games().values() if r.plugin == name),
                "regularisers": sorted(r.name for r in regularisers().values() if r.plugin == name),
                "commands": _commands_of(pm, name),
                "evaluators": sorted(r.name for r in evaluators().values() if r.plugin == name),
                "broken": None,
            }
        )
    for b in broken().values():
        rows.append(
            {
                "name": b.name,
                "version": b.version,
                "distribution": b.distribution,
                "module": b.module,
                "hooks": [],
                "games": [],
                "regularisers": [],
                "commands": [],
                "evaluators": [],
                "broken": b.error,
            }
        )
    return sorted(rows, key=lambda r: r["name"])


def register_gymnasium_envs() -> None:
    """Register Gymnasium ids declared in the ``chessrl.gymnasium`` entry-point group.

    Only metadata is read: the game module is imported when the env is made.
    """
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    for ep in importlib.metadata.entry_points(group="chessrl.gymnasium"):
        env_id = ep.name if "/" in ep.name else f"chessrl/{ep.name}"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=ep.value)
