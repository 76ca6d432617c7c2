"""immunobench: a benchmark and leaderboard for immunization defenses of text-to-image diffusion models."""

__version__ = "0.1.0"
