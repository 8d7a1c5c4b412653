"""Error types and the exit codes they map to.

Every failure a user can cause raises one of these; `cli.main` turns it into a single
`Error: ...` line on stderr and the exit code below (tracebacks only with BEBERT_DEBUG=1).
"""


class BebertError(Exception):
    """Base class: a failure with a message meant for the user."""

    exit_code = 1


class UsageError(BebertError):
    """Bad arguments: unknown task, impossible option combination, existing output."""

    exit_code = 2


class DataError(BebertError):
    """Missing or malformed data files."""

    exit_code = 1


class ModelError(BebertError):
    """A path that is not a usable model, an unsupported architecture, a label mismatch."""

    exit_code = 1


class CheckpointError(ModelError):
    """A bebert checkpoint that is corrupted, truncated or inconsistent."""


class TrainingError(BebertError):
    """Training diverged (NaN/inf loss) or could not continue."""

    exit_code = 1


class QualityGateFailed(BebertError):
    """`--fail-under` was not met: distinct exit code so CI can tell it from a crash."""

    exit_code = 3


class OutputLocked(BebertError):
    """Another bebert process is writing the same output directory."""

    exit_code = 1
