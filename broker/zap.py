"""The broker's door under --secure: pyzmq's ZAP authenticator with the allowed keys.

A peer whose key is not allowed fails its CURVE handshake, so nothing it sends ever reaches
the broker's loop; each refusal is counted (`refused_keys` in the broker's stats) and the
first few of each key are logged. The authenticator runs in its own thread (pyzmq's
ThreadAuthenticator) because it must answer before the ROUTER binds, while the broker's
event loop does not run yet; its callback only reads a set, so that thread never waits on
the loop, nor the loop on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import zmq
from zmq.auth.thread import ThreadAuthenticator

from common import logs
from common.curve import ZAP_DOMAIN, AllowedKeys, KeyPair, serve

log = logging.getLogger(__name__)

REFUSED = "refused_keys"  # the broker's stats key
MAX_LOGGED_KEYS = 256     # refusals logged by key; beyond that only counted


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """What --secure gives the broker: its own key pair and the keys it admits."""
    pair: KeyPair
    allowed: AllowedKeys


class KeyGate:
    """A ZAP credentials provider: admits the allowed keys, counts and logs the rest."""

    def __init__(self, allowed: AllowedKeys, stats: dict):
        self.allowed, self.stats = allowed, stats
        self.stats.setdefault(REFUSED, 0)
        self._logged: set[str] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        text = key.decode("ascii", errors="replace") if isinstance(key, bytes) else str(key)
        try:
            if domain == ZAP_DOMAIN and self.allowed.allows(text):
                return True
        except OSError as e:  # an unreadable directory admits nobody, and never kills the thread
            log.warning("cannot read the allowed keys in %s: %s", self.allowed.directory,
                        e.strerror or e)
        except Exception:  # a bug: admit nobody, keep the thread, say where
            log.exception("cannot read the allowed keys in %s", self.allowed.directory)
        self.stats[REFUSED] += 1
        if text not in self._logged and len(self._logged) < MAX_LOGGED_KEYS:
            self._logged.add(text)
            log.warning("refused a peer whose key is not in %s", self.allowed.directory,
                        extra=logs.kv(key=text))
        return False


def secure(sock: zmq.Socket, ctx: zmq.Context, keys: ServerKeys,
           stats: dict) -> ThreadAuthenticator:
    """Start the ZAP handler of `ctx` and make `sock` a CURVE server behind it; call before
    binding. Returns the authenticator, to stop when the socket closes."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, KeyGate(keys.allowed, stats))
    serve(sock, keys.pair)
    return auth
