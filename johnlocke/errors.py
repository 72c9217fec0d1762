"""The one error type a torrent client may see."""


class ClientError(Exception):
    """A request the tracker refuses; ``reason`` is sent to the client as ``failure reason``.

    Anything else raised while serving a request is a bug: it is logged and the client gets a
    generic failure, never a traceback.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
