"""Errors and exit codes, in one place.

    CohortctlError                 exit 1 unless a subclass says otherwise
    ├── InputError                 exit 2: a bad ID file, payload file or argument value
    │   ├── IdFileError            names the file and the line
    │   ├── StateFileError         a state file that is damaged, foreign, newer, or unwritable
    │   └── FileWriteError         an output file that could not be written (full, read-only)
    ├── ConfigError                exit 2: missing credentials, bad profile, insecure URL
    ├── RequestFailed              exit 1: the server answered non-2xx (status + body)
    ├── TransportFailed            exit 1: no answer at all (refused, timeout, reset, TLS)
    ├── CheckFailed                exit 1: a request went through but an expectation did not hold
    └── Busy                       exit 3: another sync holds this destination and cohort

Every message is written for the person at the terminal and never contains a secret.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes cohortctl promises to scripts and CI (documented in the README)."""

    OK = 0
    FAILED = 1  # a request or a check failed
    USAGE = 2  # usage or input error; a file that cannot be read or written
    BUSY = 3  # another sync of the same state file, destination and cohort is running
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class CohortctlError(Exception):
    """Base of every error cohortctl reports to the user instead of a traceback."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(CohortctlError):
    """Bad input from the user: a file, an option value, a template."""

    exit_code = ExitCode.USAGE


class IdFileError(InputError):
    """A bad ID file, naming the file and (where there is one) the line."""

    def __init__(self, source: str, message: str, *, line: int | None = None) -> None:
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line
        self.reason = message


class ConfigError(CohortctlError):
    """Missing or inconsistent settings (credentials, profile, URL)."""

    exit_code = ExitCode.USAGE


class RequestFailed(CohortctlError):
    """The server answered with a status we do not treat as success."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        error_type: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.body = body
        self.error_type = error_type


class TransportFailed(CohortctlError):
    """The request got no HTTP answer: refused, timed out, reset, TLS failure."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class CheckFailed(CohortctlError):
    """Requests went through, but what came back is not what was expected."""


class StateFileError(InputError):
    """A state file that cannot be used: not a cohortctl state, damaged, newer, unwritable."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"state file {path}: {message}")
        self.path = str(path)
        self.reason = message


class FileWriteError(InputError):
    """An output file could not be written; nothing partial was left behind."""

    def __init__(self, what: str, path: object, reason: str) -> None:
        super().__init__(f"cannot write {what} {path}: {reason}")
        self.path = str(path)
        self.reason = reason


class Interrupted(CohortctlError):
    """Stopped by Ctrl-C or SIGTERM; what was confirmed before is kept."""

    exit_code = ExitCode.INTERRUPTED


class Busy(CohortctlError):
    """Another process holds the sync lock of this state file, destination and cohort."""

    exit_code = ExitCode.BUSY
