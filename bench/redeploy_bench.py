#!/usr/bin/env python3
"""Redeploy after a one-line change: `git push` until the new version is
served, rack vs the same work by hand.

rack: `git push` to rack; the clock stops when rack's router first answers
with the new page (polled every 5 ms from the moment the push starts).
By hand: `git push` to a bare repo over OpenSSH, `git archive main | docker
build -`, `docker run -d -p` of the new image, then the same 5 ms polling
of the new container's published port until it answers with the new page.
The by-hand path switches nothing, drains nothing and never stops the old
container (that is left out of its clock); rack does all three.

Both sides are warm: a first deploy (not timed) fills the layer cache and
starts the first version, then in every round each side deploys its own
one-line change of the page (a commit of its own, so neither side gets the
layers the other just built). Rounds alternate which side goes first.

rack's push output is time-stamped so its median can be split into stages:
push received → build done → new instance healthy → `Deployed` → push exit.

Usage: bench/redeploy_bench.py [--rack target/release/rack] [--rounds 5]
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
from push_bench import bench_workspace, openssh_git_server, run  # noqa: E402
from ssh_latency import Server, free_port  # noqa: E402

NS = "redeploybench"
VERBOSE = False
DOCKERFILE = """ARG BASE_IMAGE=rack-test/busybox:latest
FROM ${BASE_IMAGE}
COPY . /app
EXPOSE 5000
CMD ["sh", "-c", "exec httpd -f -p ${PORT:-5000} -h /app/public"]
"""


def commit_all(path, msg):
    run(["git", "-C", path, "add", "-A"])
    run(["git", "-C", path, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", msg])


def get(port, host, timeout=1.0):
    """Body of GET / (or None when nothing answers 200)."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/index.html", headers={"Host": host})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        c.close()
        return body if r.status == 200 else None
    except OSError:
        return None


class Watch:
    """Polls (port, host) every 5 ms from `start()` until the body contains
    `marker`; `seen` is the time of the first such answer."""

    def __init__(self, port, host, marker, t0):
        self.port, self.host, self.marker, self.t0 = port, host, marker, t0
        self.seen = None
        self.stop = False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def loop(self):
        while not self.stop:
            port = self.port() if callable(self.port) else self.port
            if port:
                body = get(port, self.host)
                if body is not None and self.marker in body:
                    self.seen = time.perf_counter() - self.t0
                    return
            time.sleep(0.005)

    def wait(self, timeout=120):
        self.t.join(timeout)
        self.stop = True
        if self.seen is None:
            raise RuntimeError(f"{self.marker!r} never served on {self.host}")
        return self.seen


def rack_push(src, url, env, t0):
    """Runs the push; returns {stage: seconds since t0} from its output."""
    stages = {}
    p = subprocess.Popen(["git", "-C", src, "push", url, "main"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    out = []
    for raw in p.stderr:
        now = time.perf_counter() - t0
        line = raw.decode(errors="replace")
        out.append(line)
        if VERBOSE:
            print(f"  {now:7.3f} {line.rstrip()}", flush=True)
        for key, needle in (
            ("received", "Building"),
            ("built", "succeeded in"),
            ("healthy", "1/1 healthy"),
            ("deployed", "Deployed"),
        ):
            if needle in line and key not in stages:
                stages[key] = now
    p.wait()
    stages["exit"] = time.perf_counter() - t0
    if p.returncode != 0 or "deployed" not in stages:
        raise RuntimeError("rack push failed:\n" + "".join(out))
    return stages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rack", default="target/release/rack")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (rack.log)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print rack's push output with timestamps")
    a = ap.parse_args()
    global VERBOSE
    VERBOSE = a.verbose
    tmp, key, ssh, data = bench_workspace("rack-redeploy-bench-", a.rack, NS)
    env = dict(os.environ, GIT_SSH_COMMAND=ssh)
    sshd, sport = openssh_git_server(tmp, key)
    rport, hport = free_port(), free_port()
    rack = Server("rack", rport, "git", [a.rack, "server", "--data-dir", data, "--listen", f"127.0.0.1:{rport}", "--http", f"127.0.0.1:{hport}"], dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")), f"{tmp}/rack.log", 30)
    sshd.start()
    rack.start()
    app = "rd" + uuid.uuid4().hex[:6]
    host = f"{app}.localhost"
    hand_containers = []
    res = {"hand": [], "rack": []}
    stages = []
    hand_stages = []
    try:
        src = os.path.join(tmp, "src")
        run(["git", "init", "-q", "-b", "main", src])
        os.makedirs(os.path.join(src, "public"))
        with open(os.path.join(src, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        page = os.path.join(src, "public", "index.html")
        # A nonce per run: pages (hence layers) never repeat across runs.
        nonce = uuid.uuid4().hex[:8]
        with open(page, "w") as f:
            f.write(f"{nonce} round 0\n")
        commit_all(src, "round 0")
        subprocess.run(ssh.split() + ["-p", str(rport), "git@127.0.0.1", f"apps:create {app}"], check=True, capture_output=True)
        bare = os.path.join(tmp, "bare.git")
        run(["git", "init", "-q", "--bare", bare])
        rack_url = f"ssh://git@127.0.0.1:{rport}/{app}"
        hand_url = f"ssh://{sshd.user}@127.0.0.1:{sport}{bare}"

        def by_hand(marker):
            t0 = time.perf_counter()
            port = {}
            w = Watch(lambda: port.get("p"), "localhost", marker, t0)
            run(["git", "-C", src, "push", "-q", hand_url, "main"], env=env)
            st = {"pushed": time.perf_counter() - t0}
            arch = subprocess.Popen(["git", "-C", bare, "archive", "main"], stdout=subprocess.PIPE)
            tag = f"bench-redeploy:{uuid.uuid4().hex[:8]}"
            run(["docker", "build", "-q", "-t", tag, "-"], stdin=arch.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            arch.wait()
            st["built"] = time.perf_counter() - t0
            p = free_port()
            cid = subprocess.run(
                ["docker", "run", "-d", "--label", f"rack.ns={NS}", "-e", "PORT=5000", "-p", f"127.0.0.1:{p}:5000", tag],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
            hand_containers.append(cid)
            port["p"] = p
            st["run"] = time.perf_counter() - t0
            st["served"] = w.wait()
            hand_stages.append(st)
            return st["served"]

        def by_rack(marker):
            t0 = time.perf_counter()
            w = Watch(hport, host, marker, t0)
            st = rack_push(src, rack_url, env, t0)
            served = w.wait()
            st["served"] = served
            stages.append(st)
            return served

        # Warm-up (not timed): first build of each side, layer cache filled.
        by_hand(f"{nonce} round 0")
        by_rack(f"{nonce} round 0")
        stages.clear()
        hand_stages.clear()
        for rnd in range(1, a.rounds + 1):
            order = ("hand", "rack") if rnd % 2 else ("rack", "hand")
            for side in order:
                # Each side's own one-line change: neither reuses layers
                # the other just built.
                marker = f"{nonce} round {rnd} {side}"
                with open(page, "w") as f:
                    f.write(marker + "\n")
                commit_all(src, marker)
                dt = by_hand(marker) if side == "hand" else by_rack(marker)
                res[side].append(dt)
                print(f"round {rnd}: {side} {dt:.3f}s", flush=True)
            # Not timed: the by-hand side never stops its old container.
            if len(hand_containers) > 1:
                subprocess.run(["docker", "rm", "-f"] + hand_containers[:-1], capture_output=True)
                del hand_containers[:-1]
    finally:
        rack.stop()
        sshd.stop()
        subprocess.run(f"docker rm -f $(docker ps -aq --filter label=rack.ns={NS}) >/dev/null 2>&1", shell=True)
        subprocess.run(["docker", "network", "rm", f"{NS}-{app}"], capture_output=True)
        imgs = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True).stdout.split()
        mine = [i for i in imgs if i.startswith("bench-redeploy:") or i.startswith(f"rack/{app}:")]
        if mine:
            subprocess.run(["docker", "rmi"] + mine, capture_output=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    h, r = med(res["hand"]), med(res["rack"])
    print(f"redeploy after a one-line change, median of {a.rounds} (s):")
    print(f"{'by hand':>10} {'rack':>8} {'ratio':>6}")
    print(f"{h:10.3f} {r:8.3f} {r / h:6.2f}")
    keys = ["received", "built", "healthy", "served", "deployed", "exit"]
    print("by-hand stages, median seconds since `git push` started:")
    print("  " + "  ".join(f"{k} {med([s[k] for s in hand_stages]):.3f}" for k in ["pushed", "built", "run", "served"]))
    print("rack stages, median seconds since `git push` started:")
    print("  " + "  ".join(f"{k} {med([s[k] for s in stages if k in s]):.3f}" for k in keys if any(k in s for s in stages)))
    if a.keep_tmp:
        print(f"kept {tmp} (rack log: {tmp}/rack.log)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
