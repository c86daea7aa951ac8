"""One live-streamed job through a real broker and a synthetic worker process: what a
client that reads every token event gets."""

from __future__ import annotations

import zmq

from common import frames as F
from common.bodies import GenerateRequest, Sampling
from common.codec import pack, unpack
from common.messages import ClientRequest
from tests.conftest import free_port, run
from tests.faults_util import synthetic, wait_for
from tests.wire import client_final, dealer


def streamed(procs, ctx, name: str, tokens: int, *worker_args: str) -> tuple[list[dict], dict]:
    """(the token events, the winner) of one `stream="live"` job of `tokens` pieces from a
    one-slot synthetic worker started with `worker_args`."""
    port = free_port()
    procs.broker(port, "--no-mdns", "--state-dir", "off")
    synthetic(procs, port, name, "--tokens", str(tokens), *worker_args)
    wait_for(port, f"the {name} worker", lambda p: name in p)

    async def body():
        sock = dealer(ctx, f"tcp://127.0.0.1:{port}")
        sock.setsockopt(zmq.RCVHWM, 0)
        try:
            request = GenerateRequest(Sampling(prompt="go", max_tokens=tokens), candidates=1,
                                      stream="live")
            await sock.send_multipart(ClientRequest(F.SERVICE_GENERATE,
                                                    (pack(request.to_map()),)).to_frames())
            return await client_final(sock, 60.0)
        finally:
            sock.close()

    partials, final = run(body(), 80.0)
    events = [unpack(m.body[0]) for m in partials]
    return [e for e in events if e["event"] == "token"], unpack(final.body[0])["winner"]
