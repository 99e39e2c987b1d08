"""One error base for the whole service; api/ renders it as Batch's error body."""

from __future__ import annotations

from typing import ClassVar


class KilnError(Exception):
    """An internal server error occurred."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        values: dict[str, str] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip()
        if code is not None:
            self.code = code  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]
        #: Batch's optional key/value details (PropertyName, Reason, ...).
        self.values: dict[str, str] = dict(values or {})
        super().__init__(self.message)


class BadRequest(KilnError):
    """The request is not valid."""

    status = 400
    code = "InvalidRequestBody"


class InvalidPropertyValue(BadRequest):
    """A property in the request body has an invalid value."""

    code = "InvalidPropertyValue"

    def __init__(self, name: str, value: object = None, reason: str | None = None) -> None:
        values = {"PropertyName": name}
        if value is not None:
            values["PropertyValue"] = str(value)
        if reason:
            values["Reason"] = reason
        message = f"The value provided for one of the properties in the request body is invalid: {name}."
        if reason:
            message += f" {reason}"
        super().__init__(message, values=values)


class MissingRequiredProperty(BadRequest):
    """A required property is missing from the request body."""

    code = "MissingRequiredProperty"

    def __init__(self, name: str) -> None:
        super().__init__(f"The request body is missing the required property: {name}.", values={"PropertyName": name})


class InvalidQueryParameterValue(BadRequest):
    """A query parameter has an invalid value."""

    code = "InvalidQueryParameterValue"

    def __init__(self, name: str, value: str, reason: str) -> None:
        super().__init__(
            f"Value for one of the query parameters specified in the request URI is invalid. {reason}",
            values={"QueryParameterName": name, "QueryParameterValue": value, "Reason": reason},
        )


class RequestBodyTooLarge(KilnError):
    """The request body is too large and exceeds the maximum permissible limit."""

    status = 413
    code = "RequestBodyTooLarge"


class AuthenticationFailed(KilnError):
    """Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature."""  # noqa: E501 (the docstring is the wire message)

    status = 403
    code = "AuthenticationFailed"

    def __init__(self, reason: str) -> None:
        super().__init__(values={"AuthenticationErrorDetail": reason})


class NotFound(KilnError):
    """The specified resource does not exist."""

    status = 404
    code = "ResourceNotFound"


class Conflict(KilnError):
    """The operation is not allowed in the resource's current state."""

    status = 409
    code = "OperationInvalidForCurrentState"


class ConditionNotMet(KilnError):
    """The condition specified using HTTP conditional header(s) is not met."""

    status = 412
    code = "ConditionNotMet"


class InvalidTransition(Conflict):
    """The requested state change is not allowed from the current state."""


class StaleState(Exception):
    """The scheduler's memory and the store disagree: a guarded state change found its row moved.

    Not a KilnError (no request caused it): it aborts the scheduler's transaction, which writes nothing,
    and the round's loop logs it like any other failed round."""


class ServerBusy(KilnError):
    """The server cannot take this request now; try again later."""

    status = 503
    code = "ServerBusy"
