"""chessrl: GRPO for board games on TorchRL, with plugins for every regulariser and game."""

from chessrl.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]


def _register_gymnasium() -> None:
    from chessrl.pluginmanager import register_gymnasium_envs

    register_gymnasium_envs()


_register_gymnasium()
