"""CLI commands `run` and `demo` (placeholder until the pipeline lands)."""


def register(subparsers) -> None:
    """Add `run` and `demo` to the `privimage` parser."""
