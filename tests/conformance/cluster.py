"""Real `cinder-api` instances on loopback (sqlite, no Keystone, no RabbitMQ) and the proxy
binary in front of some of them. The README ("Run all tests") says what runs and why; this
file is how: a venv from tests/python-requirements.txt, one config and sqlite database per
instance, the fakeauth filter of fakeauth.py in Cinder's paste pipeline."""
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = Path(sys.prefix)
BIN = VENV / "bin"
ETC = VENV / "etc" / "cinder"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=60, ok=(200, 300)):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
            last = e
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up: {last}")


def paste_file(workdir):
    """Cinder's own api-paste.ini with keystonemiddleware's authtoken swapped for fakeauth."""
    text = (ETC / "api-paste.ini").read_text()
    text = text.replace("authtoken keystonecontext", "fakeauth keystonecontext")
    text += "\n[filter:fakeauth]\npaste.filter_factory = fakeauth:filter_factory\n"
    path = workdir / "api-paste.ini"
    path.write_text(text)
    return path


def filters_file(workdir):
    """The upstream filters, plus the `~` (LIKE) filters for backups."""
    filters = json.loads((ETC / "resource_filters.json").read_text())
    filters["backup"] = ["name", "status", "volume_id", "name~", "status~", "volume_id~"]
    path = workdir / "resource_filters.json"
    path.write_text(json.dumps(filters))
    return path


def write_conf(state, port, paste, filters, osapi_max_limit):
    state.mkdir(parents=True, exist_ok=True)
    conf = state / "cinder.conf"
    conf.write_text(f"""[DEFAULT]
auth_strategy = keystone
transport_url = fake://
api_paste_config = {paste}
resource_query_filters_file = {filters}
osapi_max_limit = {osapi_max_limit}
state_path = {state}
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = {port}
osapi_volume_workers = 1
# Unlimited: quotas are each region's, so one instance holding every region's rows would
# refuse what the regions accept (tests/conformance/test_routing.py makes backups and volumes).
quota_volumes = -1
quota_snapshots = -1
quota_backups = -1
quota_gigabytes = -1
quota_backup_gigabytes = -1
# The seeded cinder-backup services (seed.py) never report: they stay up for ten years.
service_down_time = 315360000
log_file = {state}/cinder-api.log
[database]
connection = sqlite:///{state}/cinder.sqlite
[oslo_concurrency]
lock_path = {state}/locks
[coordination]
backend_url = file://{state}/coord
""")
    return conf


class Cluster:
    """Cinder instances by name, and the proxy over some of them."""

    def __init__(self):
        self.workdir = Path(tempfile.mkdtemp(prefix="vbs-conformance-"))
        self.procs = []
        self.urls = {}
        self.proxy_url = None
        self.env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONWARNINGS="ignore")

    def start_cinder(self, instances):
        """instances: {name: ({"backups": rows, "snapshots": rows}, osapi_max_limit)}"""
        paste, filters = paste_file(self.workdir), filters_file(self.workdir)
        template = self.workdir / "template"
        conf = write_conf(template, free_port(), paste, filters, 1000)
        subprocess.run([BIN / "cinder-manage", "--config-file", conf, "db", "sync"], check=True,
                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        confs = {}
        for name, (tables, max_limit) in instances.items():
            port = free_port()
            state = self.workdir / name
            confs[name] = write_conf(state, port, paste, filters, max_limit)
            shutil.copy(template / "cinder.sqlite", state / "cinder.sqlite")
            (state / "rows.json").write_text(json.dumps(tables))
            self.urls[name] = f"http://127.0.0.1:{port}"

        def seed(name):
            done = subprocess.run([sys.executable, HERE / "seed.py", confs[name], self.workdir / name / "rows.json"],
                                  env=self.env, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"seeding {name} failed:\n{done.stdout}\n{done.stderr}")

        with concurrent.futures.ThreadPoolExecutor(len(instances)) as pool:
            list(pool.map(seed, instances))
        for name in instances:
            log = open(self.workdir / name / "stdout.log", "w")
            self.procs.append(subprocess.Popen([BIN / "cinder-api", "--config-file", confs[name]], env=self.env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        for name in instances:
            wait_http(self.urls[name] + "/")

    def start_proxy(self, regions, extra=""):
        binary = os.environ["VBS_PROXY_BIN"]
        port = free_port()
        text = f'[server]\nlisten = "127.0.0.1:{port}"\n{extra}\n[log]\nlevel = "warn"\n'
        for name in regions:
            text += f'[[regions]]\nname = "{name}"\nurl = "{self.urls[name]}"\n'
        conf = self.workdir / "proxy.toml"
        conf.write_text(text)
        log = open(self.workdir / "proxy.log", "w")
        self.procs.append(subprocess.Popen([binary, "serve", "--config", conf], stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))
        self.proxy_url = f"http://127.0.0.1:{port}"
        wait_http(self.proxy_url + "/healthz")
        return self.proxy_url

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if os.environ.get("VBS_CONFORMANCE_KEEP"):
            print(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
