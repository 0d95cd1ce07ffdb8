"""Built-in games, installed as chessrl.envs and registered through entry points."""
