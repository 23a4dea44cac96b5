"""Errors that name what went wrong and where, so a batch run can report them and go on."""

from __future__ import annotations

from pathlib import Path


class FusionInputError(Exception):
    """Bad input for one study: names the study and the file at fault.

    Raised by loaders, validators, registration and writers. A batch runner catches it, records
    ``str(err)`` in the run summary and carries on with the next study.
    """

    def __init__(self, message: str, study: str | None = None, path: str | Path | None = None):
        self.message = message
        self.study = study
        self.path = None if path is None else str(path)
        super().__init__(self._format())

    def __reduce__(self):  # pickles with its study and file (errors cross process boundaries, e.g. a loader worker)
        return type(self), (self.message, self.study, self.path)

    def _format(self) -> str:
        where = []
        if self.study is not None:
            where.append(f"study '{self.study}'")
        if self.path is not None:
            where.append(f"file '{self.path}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def with_study(self, study: str) -> "FusionInputError":
        """Return the same error with the study name filled in (loaders may not know it)."""
        if self.study is None:
            return FusionInputError(self.message, study=study, path=self.path)
        return self


class OutputError(FusionInputError):
    """An output that cannot be written: an output folder that is missing its permissions or is not a folder, a write
    that failed (disk full, file size limit). Names the study (when there is one) and the file or, with
    ``folder=True``, the folder."""

    def __init__(self, message: str, study: str | None = None, path: str | Path | None = None, folder: bool = False):
        self.folder = folder
        super().__init__(message, study=study, path=path)

    def _format(self) -> str:
        text = super()._format()
        return text.replace(f"file '{self.path}'", f"output folder '{self.path}'", 1) if self.folder else text

    def with_study(self, study: str) -> "OutputError":
        if self.study is None:
            return OutputError(self.message, study=study, path=self.path, folder=self.folder)
        return self


class RegistrationError(FusionInputError):
    """Registration did not converge to a plausible alignment (e.g. no overlap, metric too poor)."""


class WeightsError(Exception):
    """A checkpoint that does not fit the network it is loaded into (wrong preset, missing keys)."""
