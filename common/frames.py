"""MDP/0.2 (ZeroMQ RFC 18) frame constants: the only place that spells them.

Extensions of ours stay invisible to strict peers: READY may carry one more frame (the
worker profile) and CANCEL (0x07) goes only to workers whose profile accepts it.
"""

CLIENT = b"MDPC02"
WORKER = b"MDPW02"

# MDP/Client commands
C_REQUEST = b"\x01"
C_PARTIAL = b"\x02"
C_FINAL = b"\x03"

# MDP/Worker commands
W_READY = b"\x01"
W_REQUEST = b"\x02"
W_PARTIAL = b"\x03"
W_FINAL = b"\x04"
W_HEARTBEAT = b"\x05"
W_DISCONNECT = b"\x06"
W_CANCEL = b"\x07"  # extension: (client address) stop the request in flight

WORKER_COMMAND_NAMES = {
    W_READY: "READY",
    W_REQUEST: "REQUEST",
    W_PARTIAL: "PARTIAL",
    W_FINAL: "FINAL",
    W_HEARTBEAT: "HEARTBEAT",
    W_DISCONNECT: "DISCONNECT",
    W_CANCEL: "CANCEL",
}

# Services the broker answers itself
SERVICE_GENERATE = b"generate"
SERVICE_STATUS = b"swarm.status"
SERVICE_CANCEL = b"swarm.cancel"  # body {} or {job}: drop this client's job(s), reply {cancelled}
SERVICE_HISTORY = b"swarm.history"  # body {} or {limit}: reply {jobs}, the newest first
MMI_SERVICE = b"mmi.service"  # RFC 8: body is a service name, reply "200" or "404"
MMI_PREFIX = b"mmi."

# The model name that asks for any worker (GenerateRequest.model; the API's model list)
ANY_MODEL = "swarm"

# Limits on what a peer may send us
FRAME_OVERHEAD_BYTES = 64  # what one more frame costs against MAX_BODY_BYTES, even empty
MAX_SERVICE_BYTES = 255
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_MESSAGE_BYTES = MAX_BODY_BYTES + 64 * 1024  # socket-level cap (ZMQ_MAXMSGSIZE)

# Defaults (DESIGN.md)
DEFAULT_BROKER_BIND = "tcp://*:7555"
DEFAULT_BROKER_CONNECT = "tcp://127.0.0.1:7555"
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_LIVENESS = 3
DEFAULT_TIMEOUT_S = 60.0
RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 32.0
