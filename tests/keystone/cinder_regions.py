"""Real `cinder-api` 29.0.0 instances behind keystonemiddleware's `authtoken` (the packaged
api-paste.ini, `auth_strategy = keystone`), validating tokens with the test's Keystone. They run
from the conformance suite's venv (cinder pins other oslo versions than keystone), given as
VBS_CINDER_VENV, and are seeded through Cinder's DB API (tests/conformance/seed.py)."""
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from keystone_server import free_port

CONFORMANCE = pathlib.Path(__file__).resolve().parents[1] / "conformance"


def wait_up(url, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (the version list is a 300)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


class CinderRegions:
    def __init__(self, keystone, service_password, rows_by_region, volumes_by_region=None):
        venv = pathlib.Path(os.environ["VBS_CINDER_VENV"])
        self.bin, etc = venv / "bin", venv / "etc" / "cinder"
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="vbs-cinder-authtoken-"))
        self.procs, self.urls = [], {}
        env = dict(os.environ, PYTHONPATH=str(CONFORMANCE), PYTHONWARNINGS="ignore")
        for name, rows in rows_by_region.items():
            state = self.dir / name
            state.mkdir()
            port = free_port()
            conf = state / "cinder.conf"
            conf.write_text(f"""[DEFAULT]
auth_strategy = keystone
transport_url = fake://
api_paste_config = {etc / "api-paste.ini"}
resource_query_filters_file = {etc / "resource_filters.json"}
state_path = {state}
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = {port}
osapi_volume_workers = 1
log_file = {state}/cinder-api.log
[database]
connection = sqlite:///{state}/cinder.sqlite
[oslo_concurrency]
lock_path = {state}/locks
[coordination]
backend_url = file://{state}/coord
[keystone_authtoken]
www_authenticate_uri = {keystone.url}
auth_url = {keystone.url}
auth_type = password
username = cinder
password = {service_password}
user_domain_name = Default
project_name = service
project_domain_name = Default
service_token_roles_required = true
token_cache_time = 10
""")
            subprocess.run([self.bin / "cinder-manage", "--config-file", conf, "db", "sync"], check=True, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            volumes = (volumes_by_region or {}).get(name, [])
            (state / "rows.json").write_text(json.dumps({"backups": rows, "snapshots": [], "volumes": volumes}))
            subprocess.run([self.bin / "python", CONFORMANCE / "seed.py", conf, state / "rows.json"], check=True,
                           env=env, capture_output=True)
            log = open(state / "stdout.log", "w")
            self.procs.append(subprocess.Popen([self.bin / "cinder-api", "--config-file", conf], env=env,
                                               stdout=log, stderr=subprocess.STDOUT))
            self.urls[name] = f"http://127.0.0.1:{port}"
        for url in self.urls.values():
            wait_up(url + "/")

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def backup(i, project, user):
    created = f"2026-01-01T00:{i:02d}:00"
    return {"id": f"0000{i:04d}-aaaa-4bbb-8ccc-{i:012d}", "user_id": user, "project_id": project,
            "volume_id": "1c2d3e4f-0000-4000-8000-000000000001", "status": "available", "size": i % 3 + 1,
            "object_count": 1, "availability_zone": "az1", "container": "backups",
            "display_name": f"backup-{i}", "display_description": None, "fail_reason": None,
            "created_at": created, "updated_at": None, "data_timestamp": created, "parent_id": None,
            "num_dependent_backups": 0, "metadata": {}}


def volume(i, project, user):
    """An available volume of `project`, of the type every seeded instance holds."""
    created = f"2026-01-01T01:{i:02d}:00"
    return {"id": f"1c2d3e4f-{i:04d}-4000-8000-{i:012d}", "user_id": user, "project_id": project,
            "status": "available", "attach_status": "detached", "size": 1, "availability_zone": "az1",
            "display_name": f"volume-{i}", "created_at": created,
            # tests/conformance/data.py VOLUME_TYPES' first: seed.py creates it in every instance.
            "volume_type_id": "3b0c1d2e-0f1a-4b2c-8d3e-4f5a6b7c8d9e"}
