"""Built-in regularisers, installed as chessrl.plugins and registered through entry points."""
