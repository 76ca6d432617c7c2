"""Built-in task cards (YAML), shipped as package data."""
