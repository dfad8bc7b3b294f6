import json
import os
import pathlib
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from keystone_server import Keystone, call, free_port


class Region:
    """A stand-in Cinder region that takes any token (the proxy is what checks them here) and
    counts the listings it is asked for."""

    def __init__(self):
        self.calls = 0
        self.paths = []
        region = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                host = self.headers.get("Host", "")
                if self.path in ("/", "/v3/"):
                    doc = {"versions": [{"id": "v3.0", "status": "CURRENT", "version": "3.71", "min_version": "3.0",
                                         "updated": "2023-08-31T00:00:00Z",
                                         "links": [{"rel": "self", "href": f"http://{host}/v3/"}]}]}
                    return self.answer(300 if self.path == "/" else 200, doc)
                region.calls += 1
                region.paths.append(self.path)
                return self.answer(200, {"backups": []})

            def answer(self, status, doc):
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Proxy:
    def __init__(self, keystone, regions, extra=""):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        conf = pathlib.Path(tempfile.mkdtemp(prefix="vbs-keystone-proxy-")) / "proxy.toml"
        text = (f'[server]\nlisten = "127.0.0.1:{port}"\n[log]\nlevel = "warn"\n'
                f'[keystone_authtoken]\nauth_url = "{keystone.url}/v3"\nusername = "vbs-proxy"\n'
                f'password = "service-password"\nproject_name = "service"\n{extra}\n')
        for i, r in enumerate(regions):
            text += f'[[regions]]\nname = "r{i}"\nurl = "{r.url}"\n'
        conf.write_text(text)
        self.proc = subprocess.Popen([os.environ["VBS_PROXY_BIN"], "serve", "--config", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=5)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the proxy did not start")

    def get(self, path, token=None):
        return call("GET", self.url + path, headers={"X-Auth-Token": token} if token else {},
                    expect=range(100, 600))

    def counter(self, name, labels):
        """A counter of /metrics (0 until it is first counted)."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=5).read().decode()
        prefix = f"{name}{{{labels}}} "
        return next((float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix)), 0)

    def until_counted(self, name, labels, at_least, seconds=30):
        """Poll /metrics until the counter reaches `at_least` (fails after `seconds`)."""
        deadline = time.monotonic() + seconds
        while self.counter(name, labels) < at_least:
            assert time.monotonic() < deadline, f"{name}{{{labels}}} stayed under {at_least}"
            time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def keystone():
    k = Keystone(token_expiration=int(os.environ.get("VBS_KEYSTONE_TOKEN_EXPIRATION", "3600")))
    service = k.project("service")
    k.user("vbs-proxy", "service-password", service, ["service"])
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def people(keystone):
    """Project p1 with two members (same roles) and an admin; project p2 with one member."""
    p1, p2 = keystone.project("p1"), keystone.project("p2")
    for name, project, roles in [("alice", p1, ["member"]), ("bob", p1, ["member"]),
                                 ("carol", p1, ["admin"]), ("dave", p2, ["member"])]:
        keystone.user(name, f"{name}-password", project, roles)
    return {"p1": p1, "p2": p2}


def login(keystone, name, project="p1"):
    return keystone.token(name, f"{name}-password", project)
