#!/usr/bin/python3
"""An IP camera for tests: GStreamer's RTSP server (gst-rtsp-server, via GI) serving H.264.

  /usr/bin/python3 rtsp-camera.py PORT [--user U --password P] [--fps N] [--size WxH]

Serves rtsp://127.0.0.1:PORT/cam and prints that URL once listening. With --user, the server
asks for Digest (default) or, with --auth basic, Basic authentication. Debian packages: python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-rtsp gstreamer1.0-plugins-{base,good,ugly,bad}.
"""
import argparse

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("port")
parser.add_argument("--user")
parser.add_argument("--password", default="")
parser.add_argument("--auth", choices=["basic", "digest"], default="digest")
parser.add_argument("--fps", type=int, default=25)
parser.add_argument("--size", default="640x360")
args = parser.parse_args()
width, height = args.size.split("x")

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(args.port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={args.fps}/1 "
    f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} "
    "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
if args.user:
    auth = GstRtspServer.RTSPAuth()
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST if args.auth == "digest" else GstRtsp.RTSPAuthMethod.BASIC)
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
    auth.add_digest(args.user, args.password, token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", "media.factory.access", True)
    permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")
print(f"rtsp://127.0.0.1:{args.port}/cam", flush=True)
GLib.MainLoop().run()
