"""dramatiq middleware of the dispatcher, one a module."""

from dispatcher.middleware.heartbeat import Heartbeat

__all__ = ["Heartbeat"]
