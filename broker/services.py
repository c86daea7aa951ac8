"""The services the broker answers itself: swarm.status, swarm.cancel, swarm.history, mmi.*.

Apart from the socket loop because none of them reaches a worker: each reads the broker's
own books (registry, metrics, history, the info map) and answers at once, through the
outbox, with one FINAL. A body that cannot be read is a bad request, counted and answered.
`rejections` is the one map of every refusal by reason that swarm.status and /metrics show.
"""

from __future__ import annotations

from collections.abc import Callable

from broker.generate import GenerateService
from broker.history import History, limit_of
from broker.metrics import MetricsBook
from broker.outbox import Outbox
from broker.policy import TimeoutPolicy
from broker.registry import Registry
from broker.status import status_map
from broker.verdicts import BAD_REQUEST
from common import frames as F
from common.codec import field as body_field, unpack_body
from common.errors import BodyError
from common.mdns import WorkerAdvert
from common.messages import ClientReply, ClientRequest
from common.rejections import Rejections

OWN = (F.SERVICE_STATUS, F.SERVICE_CANCEL, F.SERVICE_HISTORY, F.MMI_SERVICE)


class OwnServices:
    def __init__(self, registry: Registry, metrics: MetricsBook, history: History,
                 generate: GenerateService, timeouts: TimeoutPolicy, outbox: Outbox,
                 rejected: Rejections, info: Callable[[float], dict],
                 advertised: Callable[[], dict[str, WorkerAdvert]],
                 disabled: frozenset[str] = frozenset()):
        self.registry, self.metrics, self.history = registry, metrics, history
        self.generate, self.timeouts, self.outbox = generate, timeouts, outbox
        self.rejected = rejected
        self.info = info  # the broker info map of swarm.status, at `now`
        self.advertised = advertised  # node id -> mDNS advert
        self.disabled = disabled  # peer names the config file disables

    @staticmethod
    def serves(service: bytes) -> bool:
        return service in OWN or service.startswith(F.MMI_PREFIX)

    def handle(self, client: bytes, delimited: bool, req: ClientRequest, now: float) -> None:
        if req.service == F.SERVICE_CANCEL:
            self._cancel(client, delimited, req, now)
        elif req.service == F.SERVICE_HISTORY:
            self._history(client, delimited, req)
        elif req.service == F.SERVICE_STATUS:
            self.outbox.reply(client, delimited, req.service, self.status(now), final=True)
        elif req.service == F.MMI_SERVICE:
            self._mmi(client, delimited, req)
        else:  # another mmi.* service: not implemented
            self._plain(client, delimited, req.service, b"501")

    def status(self, now: float) -> dict:
        """swarm.status's answer: the broker's info and every peer (the web page's too)."""
        return status_map(self.registry, self.metrics, self.info(now), self.advertised(), now,
                          self.timeouts, self.disabled)

    def _cancel(self, client: bytes, delimited: bool, req: ClientRequest, now: float) -> None:
        try:
            job = body_field(unpack_body(req.body), "job", str, None) if req.body else None
        except BodyError as e:
            self._bad(client, delimited, req.service, e)
            return
        count = self.generate.cancel_client(client, now, job)
        self.outbox.reply(client, delimited, req.service, {"cancelled": count}, final=True)

    def _history(self, client: bytes, delimited: bool, req: ClientRequest) -> None:
        try:
            limit = limit_of(unpack_body(req.body) if req.body else {})
        except BodyError as e:
            self._bad(client, delimited, req.service, e)
            return
        self.outbox.reply(client, delimited, req.service, {"jobs": self.history.recent(limit)},
                          final=True)

    def _mmi(self, client: bytes, delimited: bool, req: ClientRequest) -> None:
        wanted = req.body[0] if req.body else b""
        known = wanted in OWN or bool(self.registry.serving(wanted))
        self._plain(client, delimited, req.service, b"200" if known else b"404")

    def _plain(self, client: bytes, delimited: bool, service: bytes, body: bytes) -> None:
        self.outbox.send(client, delimited, ClientReply(service, (body,), final=True))

    def _bad(self, client: bytes, delimited: bool, service: bytes, e: BodyError) -> None:
        self.rejected.add("bad_request")
        self.outbox.error(client, delimited, service, f"{BAD_REQUEST}: {e}")


def rejections(rejected: Rejections, stats: dict, generate: dict, router: dict,
               delivery: dict) -> dict[str, int]:
    """Every refusal by reason: at the door (`rejected`, and keys the ZAP door refused, in
    `stats`) and by the services and delivery (their stats)."""
    keys = {"refused_keys": stats["refused_keys"]} if "refused_keys" in stats else {}
    return {**rejected.to_map(), "busy": generate["busy"] + router["busy"],
            "malformed_replies": generate["malformed_replies"],
            "stale_replies": generate["stale_replies"], "shed": delivery["shed"],
            "cut_off": delivery["cut_off"], **keys}
