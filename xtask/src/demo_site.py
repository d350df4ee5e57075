# The demo's target: a page that is up, and one that is down (cargo xtask demo).
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>picket demo site</title></head>
<body><h1>picket demo site</h1>
<p>This page is up: it answers 200 with more than 64 bytes of body.</p>
<p><a href="/broken">/broken</a> answers 500, so picket reports it down.</p>
</body></html>
"""

class Site(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/", "/index.html"):
            status, body = 200, PAGE
        elif self.path == "/broken":
            status, body = 500, b"<h1>500 Internal Server Error</h1>\n"
        else:
            status, body = 404, b"<h1>404 Not Found</h1>\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Site).serve_forever()
