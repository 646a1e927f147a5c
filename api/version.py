"""The pack's version: one constant, which pyproject.toml repeats (a test keeps them equal)."""

VERSION = "0.1.0"
