"""CLI commands of the data area (placeholder until the area's commands land)."""


def register(subparsers) -> None:
    """Add this area's subcommands to the `privimage` parser."""
