"""A local MJPEG-over-HTTP stream (what many IP cameras serve), for the tests and benchmarks.

Each connection gets ``frames_per_connection`` JPEG frames and is then closed
(the camera "drops"); after ``connections`` connections the server stops
answering (the camera is gone).
"""
from __future__ import annotations

import http.server
import socketserver
import threading
import time

import cv2
import numpy as np


class MjpegServer:
    def __init__(self, frames: list[np.ndarray], frames_per_connection: int, connections: int,
                 interval: float = 0.02):
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.frames_per_connection = frames_per_connection
        self.connections = connections
        self.interval = interval
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
                try:
                    for k in range(server.frames_per_connection):
                        jpeg = server.jpegs[(start + k) % len(server.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
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
