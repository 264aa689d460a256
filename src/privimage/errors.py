"""One exception type for mistakes a user can fix (bad path, bad config, budget exceeded).

The CLI prints such an error as one line on stderr and exits 1; any other exception is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or data, reported without a traceback."""
