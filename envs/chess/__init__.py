"""Chess: python-chess boards, a move vocabulary, and a Stockfish reward service."""
