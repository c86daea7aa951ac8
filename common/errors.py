"""Error tree: one root, a few subclasses, each a single clear sentence for users."""


class SwarmError(Exception):
    """Root of every error Swarm raises on purpose."""


class ProtocolError(SwarmError):
    """A message on the wire was malformed: counted, logged and dropped by loops."""


class BodyError(ProtocolError):
    """A message body was undecodable, or a field in it missing or ill-typed."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ConfigError(SwarmError):
    """A command-line option or configuration value is unusable."""


class ModelError(SwarmError):
    """The model could not be found, assembled or loaded."""


class RequestFailed(SwarmError):
    """The swarm answered a request with an error, or not at all."""
