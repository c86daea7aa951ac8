"""Shared by broker, worker and client: wire protocol, bodies, profiles, errors."""

__version__ = "0.1.0"
