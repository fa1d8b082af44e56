"""A local MJPEG-over-HTTP stream (what many IP cameras serve), for the tests and benchmarks.

Each connection gets ``frames_per_connection`` JPEG frames and is then closed
(the camera "drops"); after ``connections`` connections the server stops
answering (the camera is gone).

By default each frame is followed by a pause of ``interval`` seconds; with
``realtime`` frame k of a connection goes out ``k * interval`` seconds after
its first (a camera's clock: the rate does not drift with the time writing
takes). ``on_send(n)``, if given, is called just before frame ``n`` of the
stream (counted over all connections; it shows ``frames[n % len(frames)]``)
is written: a latency benchmark takes it as the frame's capture time.
"""
from __future__ import annotations

import http.server
import socketserver
import threading
import time
from typing import Callable

import cv2
import numpy as np


class MjpegServer:
    def __init__(self, frames: list[np.ndarray], frames_per_connection: int, connections: int,
                 interval: float = 0.02, realtime: bool = False,
                 on_send: Callable[[int], None] | None = None):
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.frames_per_connection = frames_per_connection
        self.connections = connections
        self.interval = interval
        self.realtime = realtime
        self.on_send = on_send
        self.served = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with server._lock:
                    number = server.served
                    server.served += 1
                if number >= server.connections:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start = number * server.frames_per_connection
                began = time.perf_counter()
                try:
                    for k in range(server.frames_per_connection):
                        jpeg = server.jpegs[(start + k) % len(server.jpegs)]
                        if server.on_send is not None:
                            server.on_send(start + k)
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                        if server.realtime:
                            time.sleep(max(0.0, began + (k + 1) * server.interval
                                           - time.perf_counter()))
                        else:
                            time.sleep(server.interval)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self._httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
