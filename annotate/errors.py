"""Errors a user can cause, each with the HTTP status the web and API answer with."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAllowed(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class LeaseExpired(ServiceError):
    status_code = 410


class InvalidInput(ServiceError):
    status_code = 400


class Unavailable(ServiceError):
    """A service the request needs (the task queue's broker) cannot be reached just now."""

    status_code = 503


class Unauthenticated(ServiceError):
    """The request's credentials name no active user (a wrong API token)."""

    status_code = 401
