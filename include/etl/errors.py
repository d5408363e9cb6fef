"""The platform's data errors: problems of the data (or its declaration), not of the machinery.

Every pipeline raises these (or subclasses) for bad data. A task failing with a
:class:`DataError` is not retried on any backend: running the same job on the same data gives
the same answer. Messages name the dataset, the file and the column or rule at fault.
"""

from __future__ import annotations


class DataError(ValueError):
    """Base class: the data cannot be used as declared; retrying cannot help."""


class ContractError(DataError):
    """A dataset declaration is itself wrong (unknown type, bad format, unknown column, ...)."""


class InputFileError(DataError):
    """A whole input file is unusable (missing, empty, wrong header); the message names the file."""


class RejectThresholdExceeded(DataError):
    """Too large a share of an input's rows was rejected; nothing was published."""


class QualityCheckFailed(DataError):
    """Staged outputs did not pass their checks; nothing was published."""


# Names under which the errors travel between processes (e.g. from a spark-submit application).
DATA_ERRORS: dict[str, type[DataError]] = {
    cls.__name__: cls for cls in (DataError, ContractError, InputFileError, RejectThresholdExceeded, QualityCheckFailed)
}
