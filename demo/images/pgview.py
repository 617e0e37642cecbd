#!/usr/bin/python3
"""pgview, the seed demo's app: answers GET / with its version, the pod
that answered, and the SQL features of the Postgres it reaches, found
through the `postgres` service's environment variables, and cached for a
minute in the memcached of its own pod (127.0.0.1:11211, the pod's shared
network namespace). v1 and v2 are this same file; PGVIEW_VERSION, set in
each image, picks the answer's shape. GET /healthz is the readiness
probe. On SIGTERM (its pod was deleted) it keeps answering for a few
seconds, /healthz saying 503, while every machine's proxy drops the pod
from its services, and only then exits: no request is refused during a
rolling update."""

import http.server
import os
import signal
import socket
import socketserver
import threading
import time

import psycopg2

VERSION = os.environ.get("PGVIEW_VERSION", "1")
# Not PGVIEW_PORT: the `pgview` service injects that name (docker-link style).
PORT = int(os.environ.get("LISTEN_PORT", "8080"))
CACHE = ("127.0.0.1", 11211)
TTL = 60
DRAIN_SECONDS = float(os.environ.get("PGVIEW_DRAIN_SECONDS", "8"))
draining = threading.Event()


def on_term(signum, frame):
    draining.set()
    print("SIGTERM: draining for %.0f s" % DRAIN_SECONDS, flush=True)

    def leave():
        time.sleep(DRAIN_SECONDS)
        os._exit(0)

    threading.Thread(target=leave, daemon=True).start()


def cache_get(key):
    try:
        with socket.create_connection(CACHE, timeout=1) as s:
            s.sendall(b"get %s\r\n" % key)
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"VALUE "):
        return None
    header, _, rest = data.partition(b"\r\n")
    size = int(header.split()[3])
    return rest[:size].decode()


def cache_set(key, value):
    body = value.encode()
    try:
        with socket.create_connection(CACHE, timeout=1) as s:
            s.sendall(b"set %s 0 %d %d\r\n%s\r\n" % (key, TTL, len(body), body))
            s.recv(64)
    except OSError:
        pass


def features():
    """The Postgres version and its SQL feature counts (v2: by part of the standard)."""
    key = b"pgview-v%s-features" % VERSION.encode()
    cached = cache_get(key)
    if cached is not None:
        return cached, "memcache"
    conn = psycopg2.connect(
        host=os.environ["POSTGRES_SERVICE_HOST"],
        port=os.environ.get("POSTGRES_SERVICE_PORT", "5432"),
        user="postgres",
        dbname="postgres",
        connect_timeout=5,
    )
    try:
        cur = conn.cursor()
        cur.execute("select version()")
        lines = ["postgres: %s" % cur.fetchone()[0]]
        cur.execute(
            "select count(*) filter (where is_supported = 'YES'), count(*)"
            " from information_schema.sql_features"
        )
        yes, total = cur.fetchone()
        lines.append("sql features: %d of %d supported" % (yes, total))
        if VERSION != "1":
            cur.execute(
                "select split_part(feature_id, '-', 1) as part, count(*)"
                " from information_schema.sql_features where is_supported = 'YES'"
                " group by part order by count(*) desc limit 5"
            )
            top = ", ".join("%s %d" % row for row in cur.fetchall())
            lines.append("most supported: %s" % top)
    finally:
        conn.close()
    text = "\n".join(lines)
    cache_set(key, text)
    return text, "postgres"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path == "/healthz":
            if draining.is_set():
                return self.answer(503, "draining\n")
            return self.answer(200, "ok\n")
        try:
            text, source = features()
            status = 200
        except Exception as e:  # the answer says why, the client sees a 503
            text, source, status = "postgres unreachable: %s" % e, "none", 503
        banner = "pgview v%s from %s" % (VERSION, socket.gethostname())
        if VERSION != "1":
            banner = "== %s ==" % banner
        self.answer(status, "%s\n%s\n(answered from %s)\n" % (banner, text, source))

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    print("pgview v%s listening on :%d" % (VERSION, PORT), flush=True)
    Server(("", PORT), Handler).serve_forever()
