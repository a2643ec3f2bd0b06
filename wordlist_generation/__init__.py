"""OpenAI-compatible text generation whose output is provably restricted to a vocabulary."""

__version__ = "0.1.0"
