"""The infer call on the standard library's ThreadingHTTPServer (HTTP/1.1, keep-alive, a thread per connection).

Started on 127.0.0.1 as

    python server_stdlib.py --port P
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from v2 import BINARY_HEADER, infer_binary, infer_json, model_name


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # the headers and the body are separate writes
    timeout = 30  # seconds each read of a connection may wait

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        model = model_name(self.path)
        if model is None:
            self.send_error(404)
            return
        split = self.headers.get(BINARY_HEADER)
        self.send_response(200)
        if split is None:
            answer = infer_json(body, model)
            self.send_header("Content-Type", "application/json")
        else:
            answer, length = infer_binary(body, int(split), model)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header(BINARY_HEADER, str(length))
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    Server(("127.0.0.1", parser.parse_args().port), Handler).serve_forever()


if __name__ == "__main__":
    main()
