#!/usr/bin/env python3
"""Push-to-built time: rack vs the same work by hand.

rack: `git push` until the push prints `Build ... succeeded`.
By hand: `git push` to a bare repo over OpenSSH, then
`git archive main | docker build -` in that repo.
Each side: a first build (fresh, nothing cached: a nonce in the Dockerfile)
and a rebuild after a one-line source change (cache hit). Each side
pushes its own copy of the app with its own nonce, so neither side's first
build finds the other's layers in the cache.

Usage: bench/build_bench.py [--rack target/release/rack] [--rounds 3]
Needs Docker and the rack-test/busybox:latest image (scripts/test makes it).
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from push_bench import bench_workspace, openssh_git_server, run  # noqa: E402
from ssh_latency import Server, free_port  # noqa: E402

DOCKERFILE = """ARG BASE_IMAGE=rack-test/busybox:latest
FROM ${{BASE_IMAGE}}
RUN echo {nonce} > /nonce && mkdir -p /www
COPY . /app
CMD ["sh", "-c", "cp -r /app/public/. /www/ && exec httpd -f -p $PORT -h /www"]
"""


def commit_all(path, msg):
    run(["git", "-C", path, "add", "-A"])
    run(["git", "-C", path, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", msg])


def timed_push_until_built(argv, env):
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    built = None
    for raw in p.stderr:
        if b"succeeded in" in raw and built is None:
            built = time.perf_counter() - t0
    p.wait()
    if p.returncode != 0 or built is None:
        raise RuntimeError("rack push failed")
    return built


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rack", default="target/release/rack")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the temporary dir (rack.log) and print its path")
    a = ap.parse_args()
    tmp, key, ssh, data = bench_workspace("rack-build-bench-", a.rack, "buildbench")
    env = dict(os.environ, GIT_SSH_COMMAND=ssh)
    sshd, sport = openssh_git_server(tmp, key)
    rport = free_port()
    rack = Server("rack", rport, "git", [a.rack, "server", "--data-dir", data, "--listen", f"127.0.0.1:{rport}", "--http", "127.0.0.1:0"], dict(os.environ), f"{tmp}/rack.log", 30)
    sshd.start()
    rack.start()
    res = {}
    try:
        for rnd in range(a.rounds):
            # One source per side, each with its own nonce: neither side's
            # first build may reuse a layer the other one built.
            srcs = {}
            for side in ("hand", "rack"):
                src = srcs[side] = os.path.join(tmp, f"src{rnd}-{side}")
                run(["git", "init", "-q", "-b", "main", src])
                os.makedirs(os.path.join(src, "public"))
                with open(os.path.join(src, "Dockerfile"), "w") as f:
                    f.write(DOCKERFILE.format(nonce=uuid.uuid4().hex))
                with open(os.path.join(src, "public", "index.html"), "w") as f:
                    f.write("v1\n")
                commit_all(src, "v1")
            app = f"bb{rnd}"
            subprocess.run(ssh.split() + ["-p", str(rport), "git@127.0.0.1", f"apps:create {app}"], check=True, capture_output=True)
            bare = os.path.join(tmp, f"bare{rnd}.git")
            run(["git", "init", "-q", "--bare", bare])
            for phase in ("first", "change"):
                if phase == "change":
                    for src in srcs.values():
                        with open(os.path.join(src, "public", "index.html"), "w") as f:
                            f.write("v2\n")
                        commit_all(src, "v2")
                t0 = time.perf_counter()
                run(["git", "-C", srcs["hand"], "push", "-q", f"ssh://{sshd.user}@127.0.0.1:{sport}{bare}", "main"], env=env)
                arch = subprocess.Popen(["git", "-C", bare, "archive", "main"], stdout=subprocess.PIPE)
                run(["docker", "build", "-q", "-t", f"bench-by-hand:{rnd}", "-"], stdin=arch.stdout, stdout=subprocess.DEVNULL)
                arch.wait()
                res.setdefault((phase, "hand"), []).append(time.perf_counter() - t0)
                dt = timed_push_until_built(["git", "-C", srcs["rack"], "push", f"ssh://git@127.0.0.1:{rport}/{app}", "main"], env)
                res.setdefault((phase, "rack"), []).append(dt)
    finally:
        rack.stop()
        sshd.stop()
        subprocess.run("docker rm -f $(docker ps -aq --filter label=rack.ns=buildbench) >/dev/null 2>&1", shell=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"{'build':8} {'by hand s':>10} {'rack s':>8} {'ratio':>6}")
    for phase in ("first", "change"):
        h, r = med(res[(phase, "hand")]), med(res[(phase, "rack")])
        print(f"{phase:8} {h:10.2f} {r:8.2f} {r / h:6.2f}")
    if a.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
