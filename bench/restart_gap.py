#!/usr/bin/env python3
"""The serving gap while the rack itself restarts.

Deploys one small app, then polls it through rack's router as fast as one
client can (a new connection per request, 1 ms pause between requests)
while the rack is stopped with SIGTERM and started again on the same data
dir and ports. The app's containers keep running across the restart; what
is measured is the router's own gap: the longest window between two
successful answers (200 with the app's page), per restart.

Usage: bench/restart_gap.py [--rack target/release/rack] [--restarts 5]
Needs Docker and the rack-test/busybox:latest image (scripts/test makes it).
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from push_bench import bench_workspace, run  # noqa: E402
from ssh_latency import Server, free_port  # noqa: E402

NS = "restartgap"
DOCKERFILE = """ARG BASE_IMAGE=rack-test/busybox:latest
FROM ${BASE_IMAGE}
COPY . /app
EXPOSE 5000
CMD ["sh", "-c", "exec httpd -f -p ${PORT:-5000} -h /app/public"]
"""


class Poller:
    """GETs the page in a loop; keeps the time of every success."""

    def __init__(self, port, host):
        self.port, self.host = port, host
        self.ok = []
        self.fail = 0
        self.kinds = {}
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            good = False
            why = None
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                c.request("GET", "/index.html", headers={"Host": self.host})
                r = c.getresponse()
                good = r.status == 200 and b"restart gap" in r.read()
                why = f"HTTP {r.status}"
                c.close()
            except (OSError, http.client.HTTPException) as e:
                why = type(e).__name__
            if good:
                self.ok.append(time.perf_counter())
            else:
                self.fail += 1
                self.kinds[why] = self.kinds.get(why, 0) + 1
            time.sleep(0.001)

    def longest_gap(self, since, until):
        ts = [t for t in self.ok if since <= t <= until]
        if len(ts) < 2:
            return None
        return max(b - a for a, b in zip(ts, ts[1:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rack", default="target/release/rack")
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (rack.log)")
    a = ap.parse_args()
    tmp, _key, ssh, data = bench_workspace("rack-restart-gap-", a.rack, NS)
    env = dict(os.environ, GIT_SSH_COMMAND=ssh)
    rport, hport = free_port(), free_port()
    argv = [a.rack, "server", "--data-dir", data, "--listen", f"127.0.0.1:{rport}", "--http", f"127.0.0.1:{hport}"]
    app = "gap" + uuid.uuid4().hex[:6]
    host = f"{app}.localhost"
    rack = Server("rack", rport, "git", argv, dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")), f"{tmp}/rack.log", 60)
    rack.start()
    gaps, downs, ups = [], [], []
    poller = None
    try:
        src = os.path.join(tmp, "src")
        run(["git", "init", "-q", "-b", "main", src])
        os.makedirs(os.path.join(src, "public"))
        with open(os.path.join(src, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(src, "public", "index.html"), "w") as f:
            f.write("restart gap\n")
        run(["git", "-C", src, "add", "-A"])
        run(["git", "-C", src, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "app"])
        subprocess.run(ssh.split() + ["-p", str(rport), "git@127.0.0.1", f"apps:create {app}"], check=True, capture_output=True)
        run(["git", "-C", src, "push", "-q", f"ssh://git@127.0.0.1:{rport}/{app}", "main"], env=env, stderr=subprocess.DEVNULL)
        poller = Poller(hport, host)
        time.sleep(1)
        for i in range(a.restarts):
            t0 = time.perf_counter()
            rack.stop()  # SIGTERM, wait for the exit
            t1 = time.perf_counter()
            rack.start()  # until the SSH port accepts (after recovery)
            t2 = time.perf_counter()
            time.sleep(1.5)
            gap = poller.longest_gap(t0 - 0.5, time.perf_counter())
            gaps.append(gap)
            downs.append(t1 - t0)
            ups.append(t2 - t1)
            print(f"restart {i + 1}: stop {t1 - t0:.3f}s, start until SSH listens {t2 - t1:.3f}s, longest gap without an answer {gap:.3f}s", flush=True)
    finally:
        if poller:
            poller.stop = True
        rack.stop()
        subprocess.run(f"docker rm -f $(docker ps -aq --filter label=rack.ns={NS}) >/dev/null 2>&1", shell=True)
        subprocess.run(["docker", "network", "rm", f"{NS}-{app}"], capture_output=True)
        imgs = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
        mine = [i for i in imgs if i.startswith(f"rack/{app}:")]
        if mine:
            subprocess.run(["docker", "rmi"] + mine, capture_output=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    kinds = ", ".join(f"{k} x{n}" for k, n in sorted(poller.kinds.items()))
    print(f"{a.restarts} restarts, {len(poller.ok)} good answers, {poller.fail} failed polls ({kinds})")
    print(f"longest gap: median {med(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms "
          f"(stop median {med(downs) * 1000:.0f} ms, start median {med(ups) * 1000:.0f} ms)")
    if a.keep_tmp:
        print(f"kept {tmp} (rack log: {tmp}/rack.log)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
