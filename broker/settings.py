"""What a broker is told at start: `BrokerConfig`, from the CLI's options and config file.

Apart from the socket loop because it is plain data with its defaults, read by the CLI,
the HTTP side and the tests, none of which needs the loop to build one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from broker.adaptive import DEFAULT_CAP_S, DEFAULT_FLOOR_S
from broker.history import DEFAULT_HISTORY_SIZE
from broker.lifecycle import SHUTDOWN_GRACE_S
from broker.peers import PeerSettings
from broker.policy import CANCEL_GRACE_S, MAX_JOB_CANDIDATES, MAX_JOBS
from broker.zap import ServerKeys
from common import frames as F
from common.mdns import DEFAULT_SWARM


@dataclass(slots=True)
class BrokerConfig:
    bind: str = F.DEFAULT_BROKER_BIND
    heartbeat_s: float = F.DEFAULT_HEARTBEAT_S
    liveness: int = F.DEFAULT_LIVENESS
    timeout_s: float = F.DEFAULT_TIMEOUT_S
    first_token_timeout_s: float | None = None
    peer_timeouts: dict[str, float] = field(default_factory=dict)  # --peer-timeout: beats peers'
    max_jobs: int = MAX_JOBS
    max_candidates: int = MAX_JOB_CANDIDATES
    swarm: str = DEFAULT_SWARM
    timeout_floor_s: float = DEFAULT_FLOOR_S  # what a learned per-peer timeout stays within
    timeout_cap_s: float = DEFAULT_CAP_S
    curve: ServerKeys | None = None  # --secure: CURVE with allowed keys
    cancel_grace_s: float = CANCEL_GRACE_S
    state_file: Path | None = None  # peer metrics and job history kept here (None: in memory)
    history_size: int = DEFAULT_HISTORY_SIZE
    peers: dict[str, PeerSettings] = field(default_factory=dict)  # [peers] of the config file
    shutdown_grace_s: float = SHUTDOWN_GRACE_S
