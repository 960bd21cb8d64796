"""ScaiEcho behaviour: one service per concern; routes stay thin."""
