"""A real Keystone 30 on a free loopback port (sqlite, fernet), set up from scratch in a
temporary directory, and the few admin calls the tests need (users, projects, roles, tokens)."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
BIN = pathlib.Path(sys.executable).parent
ADMIN_PASSWORD = "admin-password-for-tests"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, body=None, headers=None, expect=(200, 201, 204)):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, text, got = r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        status, text, got = e.code, e.read().decode(), e.headers
    if status not in expect:
        raise AssertionError(f"{method} {url}: {status} {text}")
    return status, (json.loads(text) if text else None), got


class Keystone:
    def __init__(self, token_expiration=3600):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="vbs-keystone-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        conf = self.dir / "keystone.conf"
        conf.write_text(f"""[DEFAULT]
log_file = {self.dir}/keystone.log
[database]
connection = sqlite:///{self.dir}/keystone.db
[token]
provider = fernet
expiration = {token_expiration}
[fernet_tokens]
key_repository = {self.dir}/fernet-keys
[fernet_receipts]
key_repository = {self.dir}/fernet-receipts
[credential]
key_repository = {self.dir}/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = true
backend = oslo_cache.dict
""")
        self.conf = conf
        env = dict(os.environ, OS_KEYSTONE_CONFIG_FILES=str(conf))
        manage = [str(BIN / "keystone-manage"), "--config-file", str(conf)]
        user = ["--keystone-user", os.environ.get("USER", "root"), "--keystone-group", os.environ.get("USER", "root")]
        for args in (["db_sync"], ["fernet_setup", *user], ["credential_setup", *user],
                     ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD, "--bootstrap-username", "admin",
                      "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
                      "--bootstrap-service-name", "keystone", "--bootstrap-region-id", "RegionOne",
                      "--bootstrap-admin-url", self.url, "--bootstrap-public-url", self.url,
                      "--bootstrap-internal-url", self.url]):
            subprocess.run([*manage, *args], env=env, check=True, capture_output=True)
        self.start()
        self.admin = self.token("admin", ADMIN_PASSWORD, "admin")

    def start(self):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "keystone_wsgi.py"), str(self.conf), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                call("GET", self.url + "/v3", expect=(200,))
                return
            except (OSError, AssertionError):
                time.sleep(0.1)
        raise RuntimeError("keystone did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def token(self, user, password, project):
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
        _, _, headers = call("POST", self.url + "/v3/auth/tokens", body, expect=(201,))
        return headers["X-Subject-Token"]

    def admin_call(self, method, path, body=None, expect=(200, 201, 204)):
        return call(method, self.url + path, body, {"X-Auth-Token": self.admin}, expect)[1]

    def project(self, name):
        return self.admin_call("POST", "/v3/projects", {"project": {"name": name, "domain_id": "default"}})["project"]["id"]

    def role_id(self, name):
        return self.admin_call("GET", f"/v3/roles?name={name}")["roles"][0]["id"]

    def user(self, name, password, project_id, roles):
        uid = self.admin_call("POST", "/v3/users", {"user": {"name": name, "password": password,
                                                              "domain_id": "default"}})["user"]["id"]
        for role in roles:
            self.admin_call("PUT", f"/v3/projects/{project_id}/users/{uid}/roles/{self.role_id(role)}")
        return uid

    def volume_endpoints(self, urls_by_region):
        """A volumev3 service with an internal endpoint per region, as devstack registers
        Cinder's: `.../v3/%(project_id)s`."""
        services = self.admin_call("GET", "/v3/services?type=volumev3")["services"]
        service = {"service": services[0]} if services else self.admin_call(
            "POST", "/v3/services", {"service": {"type": "volumev3", "name": "cinderv3"}})
        for region, url in urls_by_region.items():
            if region != "RegionOne":
                self.admin_call("POST", "/v3/regions", {"region": {"id": region}})
            for interface in ("internal", "public"):
                self.admin_call("POST", "/v3/endpoints", {"endpoint": {
                    "service_id": service["service"]["id"], "interface": interface, "region_id": region,
                    "url": url + "/v3/%(project_id)s" if interface == "internal" else "http://public.invalid/v3"}})

    def remove_endpoints(self, region):
        """Every endpoint of `region` out of the catalog."""
        for endpoint in self.admin_call("GET", f"/v3/endpoints?region_id={region}")["endpoints"]:
            self.admin_call("DELETE", f"/v3/endpoints/{endpoint['id']}")

    def revoke(self, token):
        call("DELETE", self.url + "/v3/auth/tokens", headers={"X-Auth-Token": self.admin, "X-Subject-Token": token})
