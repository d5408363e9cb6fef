"""A job's error on its way back from where the job ran: one encoding for every path.

A job runs in the task process, on a Dask worker (submitted through a ``distributed`` client),
or in a spark-submit driver. Wherever it raised, :func:`encode` turns the exception into plain JSON::

    {"class": "KeyError", "module": "builtins", "message": "\\"['Country'] not in index\\"",
     "traceback": "Traceback (most recent call last):\\n  ...", "data_error": null}

``traceback`` is the whole formatted traceback, causes included, never shortened;
``data_error`` names the nearest platform data-error class (:mod:`include.etl.errors`), or is
null. The task process raises it again with :func:`decode`: a data error as its own class (the
operator fails the task without retries), anything else as :class:`RemoteJobError`, whose str
is ``"<Class>: <message>"`` (retried as usual). Both carry ``remote_traceback``, which the
operator logs below its one-line summary (:func:`headline`).
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any


class RemoteJobError(RuntimeError):
    """A job's error (not a data error) where the job ran; its str is ``"<Class>: <message>"``."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('class')}: {error.get('message')}")
        self.error = error
        self.remote_traceback: str = error.get("traceback") or ""

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.error,)


def data_error_name(exc: BaseException) -> str | None:
    """The name of the nearest platform data-error class of ``exc`` (a pipeline may raise a subclass), or None."""
    from include.etl.errors import DATA_ERRORS

    return next((cls.__name__ for cls in type(exc).__mro__ if DATA_ERRORS.get(cls.__name__) is cls), None)


def encode(exc: BaseException) -> dict[str, Any]:
    """``exc`` as JSON: class, module, message, full traceback and data-error class (see the module doc)."""
    return {"class": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc)), "data_error": data_error_name(exc)}


def decode(error: dict[str, Any]) -> BaseException:
    """The exception to raise for an encoded ``error``: a data error as its class, else :class:`RemoteJobError`."""
    from include.etl.errors import DATA_ERRORS, DataError

    if not error.get("data_error"):
        return RemoteJobError(error)
    cls: Any = None
    try:  # the pipeline's own subclass, if this process has it (only data errors' modules are imported)
        cls = getattr(importlib.import_module(error["module"]), error["class"])
    except Exception:  # noqa: BLE001 - a class only the remote side knows
        pass
    if not (isinstance(cls, type) and issubclass(cls, DataError)):
        cls = DATA_ERRORS.get(error["data_error"], DataError)
    exc = cls.__new__(cls)  # whatever its __init__ takes
    exc.args = (error.get("message", ""),)
    exc.remote_traceback = error.get("traceback") or ""
    return exc


def headline(exc: BaseException) -> str:
    """``"<Class>: <message>"``: what went wrong, in one line for the top of the task log."""
    if isinstance(exc, RemoteJobError):
        return str(exc)
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
