"""Request errors the serving layer raises; the router turns each into its HTTP status and OpenAI's error JSON."""


class ServeError(Exception):
    """A request the server refuses; `status` and `type` become the HTTP status and OpenAI's error type."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class BadRequest(ServeError):
    pass


class ModelNotFound(ServeError):
    status = 404
    type = "not_found_error"


class Unauthorized(ServeError):
    status = 401
    type = "authentication_error"


class Overloaded(ServeError):
    status = 429
    type = "rate_limit_error"


class TooLarge(ServeError):
    status = 413


class TimedOut(ServeError):
    status = 408
    type = "timeout_error"


class ShuttingDown(ServeError):
    status = 503
    type = "service_unavailable_error"


class EngineFailed(ServeError):
    status = 500
    type = "server_error"


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
