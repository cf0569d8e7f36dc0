#!/usr/bin/python3
"""A local RTSP camera for tests: serves an H.264 MP4 file at
rtsp://127.0.0.1:PORT/cam with GStreamer's RTSP server, once per client.
Run with Debian's /usr/bin/python3 (it has `gi`)."""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

port, path = sys.argv[1], sys.argv[2]
Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f"( filesrc location={path} ! qtdemux ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/cam", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{port}")
print(f"serving {path} at rtsp://127.0.0.1:{port}/cam", flush=True)
GLib.MainLoop().run()
