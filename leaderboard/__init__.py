"""Leaderboard tables, plots and publishing."""
