#!/usr/bin/python3
"""A WHIP ingest server for tests and benchmarks (RFC 9725), on Debian's aiortc and aiohttp.

  /usr/bin/python3 whip-ingest.py --host 127.0.0.2 --port PORT --token TOKEN

POST /whip takes an SDP offer with `Authorization: Bearer TOKEN` (401 otherwise), answers
201 with the SDP answer, a Location (/whip/ID) and a Link header naming an ICE server; DELETE
/whip/ID ends that session. Every received frame is decoded (libavcodec) and the synthetic
camera's burned-in strip (frame counter and capture wall time, see veil-media synthetic.rs) is
read back, so GET /stats tells per session: frames, the counters seen, glass-to-glass latency
(capture time in the pixels to decoded here, same host clock), and the luma mean and spread of
the picture's bottom-right quarter (what a privacy mask there must have blanked).

aiortc's ICE skips 127.0.0.1: run this inside a network namespace whose loopback also has
127.0.0.2, and use that address. Prints `listening http://HOST:PORT/whip` when ready.
"""
import argparse
import asyncio
import json
import statistics
import time
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

SYNC = 0xB5A3
BITS_PER_ROW = 48

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.2")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--token", required=True)
args = parser.parse_args()

sessions = {}


def read_bits(plane, stride, top, b):
    inner = max(b // 2, 1)
    off = (b - inner) // 2
    bits = 0
    for i in range(BITS_PER_ROW):
        total = 0
        for row in range(top + off, top + off + inner):
            start = row * stride + i * b + off
            total += sum(plane[start:start + inner])
        bits = (bits << 1) | (1 if total // (inner * inner) > 125 else 0)
    return bits


def burned_in(plane, stride, width, height):
    b = min(width // BITS_PER_ROW, 16) & ~1
    if b < 2 or height < 2 * b:
        return None
    row0 = read_bits(plane, stride, 0, b)
    if row0 >> 32 != SYNC:
        return None
    return row0 & 0xFFFFFFFF, read_bits(plane, stride, b, b)


def bottom_right(plane, stride, width, height):
    values = []
    for row in range(height // 2, height, 4):
        start = row * stride
        values.extend(plane[start + width // 2:start + width:4])
    return statistics.fmean(values), statistics.pstdev(values)


async def consume(session, track):
    try:
        while True:
            frame = await track.recv()
            now_ms = time.time() * 1000.0
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            plane = frame.planes[0]
            data, stride = bytes(plane), plane.line_size
            w, h = frame.width, frame.height
            session["frames"] += 1
            session["size"] = [w, h]
            code = burned_in(data, stride, w, h)
            if code is not None:
                seq, wall_ms = code
                if session["first_frame_ms"] is None:
                    session["first_frame_ms"] = now_ms
                session["seqs"].append(seq)
                session["latencies_ms"].append(round(now_ms - wall_ms, 2))
                del session["seqs"][:-2000]
                del session["latencies_ms"][:-2000]
            if session["frames"] % 5 == 1:
                mean, sd = bottom_right(data, stride, w, h)
                session["bottom_right"] = {"mean": round(mean, 2), "sd": round(sd, 2)}
    except Exception as e:  # the track ended
        session["track_end"] = type(e).__name__


async def whip_post(request):
    if request.headers.get("Authorization") != f"Bearer {args.token}":
        return web.Response(status=401, text="bad token")
    if request.content_type != "application/sdp":
        return web.Response(status=415, text="offer must be application/sdp")
    offer = await request.text()
    sid = uuid.uuid4().hex[:12]
    pc = RTCPeerConnection()
    session = {
        "pc": pc,
        "frames": 0,
        "first_frame_ms": None,
        "posted_ms": time.time() * 1000.0,
        "seqs": [],
        "latencies_ms": [],
        "bottom_right": None,
        "deleted": False,
        "state": "new",
        "size": None,
    }
    sessions[sid] = session

    @pc.on("track")
    def on_track(track):
        if track.kind == "video":
            asyncio.ensure_future(consume(session, track))

    @pc.on("connectionstatechange")
    def on_state():
        session["state"] = pc.connectionState

    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    for t in pc.getTransceivers():
        t.direction = "recvonly"
    await pc.setLocalDescription(await pc.createAnswer())
    return web.Response(
        status=201,
        body=pc.localDescription.sdp.encode(),
        headers={
            "Content-Type": "application/sdp",
            "Location": f"/whip/{sid}",
            "Link": f'<stun:{args.host}:3478>; rel="ice-server"',
        },
    )


async def whip_delete(request):
    if request.headers.get("Authorization") != f"Bearer {args.token}":
        return web.Response(status=401, text="bad token")
    session = sessions.get(request.match_info["sid"])
    if session is None:
        return web.Response(status=404)
    session["deleted"] = True
    await session["pc"].close()
    return web.Response(status=200)


async def stats(_request):
    out = {}
    for sid, s in sessions.items():
        out[sid] = {k: v for k, v in s.items() if k != "pc"}
    return web.Response(text=json.dumps(out), content_type="application/json")


app = web.Application()
app.add_routes([
    web.post("/whip", whip_post),
    web.delete("/whip/{sid}", whip_delete),
    web.get("/stats", stats),
])


async def main():
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"listening http://{args.host}:{args.port}/whip", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
