"""The one exception type the CLI turns into a single clear line (no traceback unless --debug)."""


class PipelineError(Exception):
    """A user-facing error: bad input, bad config, mismatched stage outputs.

    The message must name the file, line, record or key at fault and say what is wrong.
    """
