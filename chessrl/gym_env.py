"""The Gymnasium view of a game: one board, the agent plays whichever side is to move
(docs/envs.md#the-gymnasium-view-chessrlgym_envgymview). :func:`make_gym_env` builds it for an
installed game (what a game package's ``chessrl.gymnasium`` entry point calls); gymnasium is
imported only when a view is built.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chessrl.game import Game


def make_gym_env(
    game: str,
    render_mode: str | None = None,
    seed: int = 0,
    illegal_action: str = "lose",
    **options: Any,
):
    """The Gymnasium view of the installed game ``game``; ``options`` are its ``[env]`` options,
    validated by the game's own schema exactly like a config's ``[env]`` section (an unknown key
    or a bad value is a one-line :class:`~chessrl.errors.UserError`); ``seed`` seeds the game's
    own generators; ``illegal_action`` is what ``step`` does with an illegal action ("lose":
    the mover loses the game; "raise": ``ValueError``). A game package's ``chessrl.gymnasium``
    entry point calls it (docs/envs.md#the-gymnasium-view-chessrlgym_envgymview)."""
    from chessrl import pluginmanager
    from chessrl.errors import UserError
    from chessrl.schema import build

    pluginmanager.check_not_broken(game, "gymnasium: ")
    reg = pluginmanager.games().get(game)
    if reg is None:
        installed = ", ".join(sorted(pluginmanager.games()))
        raise UserError(
            f"game '{game}' is not installed (installed: {installed})"
            + pluginmanager.missing_hint(game)
        )
    return GymView(
        reg.obj(build(reg.schema, options, prefix="env"), seed), render_mode, illegal_action
    )


def reset_state(game: Game, options: dict[str, Any]) -> Any:
    """The start state a Gym ``reset(options=...)`` asks for, checked by the game's
    :meth:`~chessrl.game.Game.check_state`; a bad request is one :class:`InvalidState` line."""
    from chessrl.errors import InvalidState

    where = f"{game.name}: reset(options={options!r})"
    try:
        if "state" in options:
            if len(options) != 1:
                raise ValueError("'state' cannot be combined with other options")
            state = game.copy_state(options["state"])
        elif type(game).state_from_options is Game.state_from_options:
            raise ValueError(
                f"game '{game.name}' takes no reset options but 'state' (it defines no "
                "state_from_options)"
            )
        else:
            state = game.state_from_options(dict(options))
        game.check_state(state)
    except InvalidState:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidState(f"{where}: {exc}") from None
    return state


class GymView:
    """Gymnasium view of one board of a game: the agent plays whichever side is to move.

    The action space is a :class:`Discrete` whose ``sample()`` without a mask draws a legal
    move of the current position, so Gymnasium's ``check_env`` and unmasked example loops
    play legal moves; an explicit ``mask`` or ``probability`` is honoured as in Gymnasium.
    The observation's ``action_mask`` of a finished position shows only action 0 (as in
    :class:`BoardGameEnv`), so masked samplers stay well defined; ``step`` after the end raises
    ``ValueError``. An illegal action ends the episode as a loss for the mover
    (``illegal_action="lose"``, PettingZoo's convention; deterministic, so ``check_env``'s
    determinism test passes with random starts) or raises ``ValueError`` (``"raise"``).
    ``reset(options=...)`` goes through :func:`reset_state`.

    Built lazily so that importing chessrl does not import gymnasium's env machinery.
    """

    def __new__(cls, game: Game, render_mode: str | None = None, illegal_action: str = "lose"):
        return _gym_class()(game, render_mode, illegal_action)


_GYM_CLASS = None


def _gym_class():
    global _GYM_CLASS
    if _GYM_CLASS is not None:
        return _GYM_CLASS
    import gymnasium as gym
    from gymnasium import spaces

    class LegalDiscrete(spaces.Discrete):
        """``Discrete(n_actions)``: an unmasked ``sample()`` draws a legal move of ``env``'s "
        "position."""

        def __init__(self, n: int, env: "GameGymEnv"):
            super().__init__(n)
            self._env = env

        def sample(self, mask=None, probability=None):
            shown = getattr(self._env, "_shown_mask", None)
            if mask is None and probability is None and shown is not None:
                mask = shown
            return super().sample(mask=mask, probability=probability)

    class GameGymEnv(gym.Env):
        metadata = {"render_modes": ["ansi"], "render_fps": 4}

        def __init__(
            self, game: Game, render_mode: str | None = None, illegal_action: str = "lose"
        ):
            if illegal_action not in ("lose", "raise"):
                from chessrl.errors import UserError

                raise UserError(
                    f"illegal_action = {illegal_action!r}: use 'lose' (the mover loses the game) "
                    "or 'raise' (ValueError)"
                )
            self.game = game
            self.illegal_action = illegal_action
            self.render_mode = render_mode
            self.observation_space = spaces.Dict(
                {
                    "board": spaces.Box(
                        0, game.obs_vocab - 1, shape=(game.obs_len,), dtype=np.int64
                    ),
                    "action_mask": spaces.MultiBinary(game.n_actions),
                }
            )
            self.action_space = LegalDiscrete(game.n_actions, self)
            self.state = None
            self._over = True

        def _obs(self):
            o = self.game.observe([self.state])
            self._last = o
            mask = o.action_mask[0].astype(np.int8)
            if not mask.any():  # finished: only action 0, as in BoardGameEnv
                mask[0] = 1
            self._shown_mask = mask
            return {"board": o.tokens[0].astype(np.int64), "action_mask": mask.copy()}

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            options = options or {}
            if options:
                self.state = reset_state(self.game, options)
            else:
                rng = np.random.default_rng(self.np_random.integers(2**63))
                self.state = self.game.initial_states(1, rng)[0]
            self.ply, self._over = 0, False
            self.value = float(self.game.values([self.state])[0])
            return self._obs(), {"to_play": int(self.game.observe([self.state]).to_play[0])}

        def step(self, action):
            if self._over:
                raise ValueError("step() after the episode ended (or before reset()); call reset()")
            a = int(action)
            inside = 0 <= a < self.game.n_actions  # -1 would wrap around to the last action
            if not inside or not self._last.action_mask[0, a]:
                what = (
                    self.game.action_to_str(a) if inside else f"not in 0..{self.game.n_actions - 1}"
                )
                why = f"illegal action {action} ({what}) in {self.game.state_to_str(self.state)}"
                if self.illegal_action == "raise":
                    raise ValueError(why)
                # the mover loses (PettingZoo's convention): a deterministic, terminal transition
                self._over = True
                reward, self.value = -1.0 - self.value, 1.0
                obs = self._obs()
                obs["action_mask"][:] = 0
                obs["action_mask"][0] = 1  # over: only action 0, as for a finished game
                self._shown_mask = obs["action_mask"].copy()
                return (
                    obs,
                    reward,
                    True,
                    False,
                    {
                        "reason": "illegal_action",
                        "to_play": int(self._last.to_play[0]),
                        "illegal": why,
                    },
                )
            mover = int(self._last.to_play[0])
            self.state = self.game.play([self.state], np.array([a]))[0]
            self.ply += 1
            obs = self._obs()
            after = float(self.game.values([self.state])[0])
            # values are for the side to move: the opponent, or the mover on an extra turn
            again = int(self._last.to_play[0]) == mover
            reward = (after if again else -after) - self.value
            self.value = after
            terminated = bool(self._last.terminated[0])
            truncated = not terminated and self.ply >= self.game.max_plies
            reason = self._last.reason[0] or ("max_plies" if truncated else "")
            self._over = terminated or truncated
            return (
                obs,
                reward,
                terminated,
                truncated,
                {"reason": reason, "to_play": int(self._last.to_play[0])},
            )

        def render(self):
            return self.game.state_to_str(self.state)

        def close(self):
            self.game.close()

    _GYM_CLASS = GameGymEnv
    return GameGymEnv
