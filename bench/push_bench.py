#!/usr/bin/env python3
"""Push time and peak memory: rack's receive-pack vs OpenSSH sshd + git receive-pack.

Two repositories, both pushed in full to an empty target each round, the two
servers alternating, same client (`git push` over `ssh`) and key:
  - `big`: 100 MiB of incompressible data in 10 files of 10 MiB, packed with
    `git repack -adf`;
  - `history`: 10,000 small commits.
rack receives with `-o skip-deploy` (transport only, as the baseline). rack's
peak RSS during each push is sampled from /proc every 5 ms.

Usage: bench/push_bench.py [--rack target/release/rack] [--rounds 3] [--only big|history] [--keep]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ssh_latency import Server, free_port  # noqa: E402


def run(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def bench_workspace(prefix, rack_bin, namespace):
    """A temp dir with a fresh client key, the `ssh` command line using it
    (same key exchange for every server), and a rack data dir (own Docker
    namespace) whose admin is that key. Returns (tmp, key, ssh, data)."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    key = os.path.join(tmp, "key")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    ssh = f"ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o KexAlgorithms=curve25519-sha256"
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    with open(os.path.join(data, "rack.toml"), "w") as f:
        f.write(f'namespace = "{namespace}"\n')
    with open(key + ".pub", "rb") as pub:
        run([rack_bin, "keys", "add", "bench", "--admin", "--data-dir", data], stdin=pub, capture_output=True)
    return tmp, key, ssh, data


def make_big(path, mib_per_file=10, files=10):
    run(["git", "init", "-q", "-b", "main", path])
    for i in range(files):
        with open(os.path.join(path, f"blob{i}.bin"), "wb") as f:
            f.write(os.urandom(mib_per_file * 1024 * 1024))
    run(["git", "-C", path, "add", "-A"])
    run(["git", "-C", path, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "big"])
    run(["git", "-C", path, "repack", "-adfq"])


def make_history(path, commits=10_000):
    run(["git", "init", "-q", "-b", "main", path])
    lines = []
    for i in range(commits):
        data = f"line {i}\n"
        lines.append(
            f"commit refs/heads/main\nmark :{i + 1}\ncommitter b <b@x> {1_700_000_000 + i} +0000\n"
            f"data 4\nc{i % 10}\n\n"
            + (f"from :{i}\n" if i else "")
            + f"M 100644 inline file{i % 50}.txt\ndata {len(data)}\n{data}\n"
        )
    subprocess.run(["git", "-C", path, "fast-import", "--quiet"], input="".join(lines).encode(), check=True)
    run(["git", "-C", path, "repack", "-adfq"])


def openssh_git_server(tmp, key):
    """A private sshd on a free port that runs git commands for `key`."""
    d = os.path.join(tmp, "sshd")
    os.makedirs(os.path.join(d, "home"))
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "hk")])
    shutil.copy(key + ".pub", os.path.join(d, "ak"))
    sport = free_port()
    with open(os.path.join(d, "conf"), "w") as f:
        f.write(
            f"ListenAddress 127.0.0.1\nPort {sport}\nHostKey {d}/hk\nPidFile {d}/pid\nAuthorizedKeysFile {d}/ak\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            f"UsePAM no\nStrictModes no\nUseDNS no\nLogLevel ERROR\nSetEnv HOME={d}/home\n"
        )
    os.makedirs("/run/sshd", exist_ok=True)
    user = os.environ.get("USER", "root")
    return Server("openssh", sport, user, ["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/conf"], dict(os.environ), f"{d}/log", 20), sport


class Peak:
    """Samples a process's RSS until stopped."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]))
            except OSError:
                return
            time.sleep(0.005)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rack", default="target/release/rack")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=["big", "history"], help="run one case only")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (rack.log, repos)")
    a = ap.parse_args()
    tmp, key, ssh, data = bench_workspace("rack-push-bench-", a.rack, "pushbench")
    sshd, sport = openssh_git_server(tmp, key)
    rport = free_port()
    rack = Server("rack", rport, "git", [a.rack, "server", "--data-dir", data, "--listen", f"127.0.0.1:{rport}", "--http", "127.0.0.1:0"], dict(os.environ), f"{tmp}/rack.log", 30)

    repos = {}
    for name, maker in (("big", make_big), ("history", make_history)):
        if a.only and name != a.only:
            continue
        p = os.path.join(tmp, name)
        t0 = time.time()
        maker(p)
        repos[name] = p
        print(f"made {name} in {time.time() - t0:.1f}s", file=sys.stderr)

    sshd.start()
    rack.start()
    env = dict(os.environ, GIT_SSH_COMMAND=ssh)
    results = {}
    try:
        for name, path in repos.items():
            for rnd in range(a.rounds):
                # openssh: fresh bare repo
                bare = os.path.join(tmp, f"bare-{name}.git")
                shutil.rmtree(bare, ignore_errors=True)
                run(["git", "init", "-q", "--bare", bare])
                t0 = time.perf_counter()
                run(["git", "-C", path, "push", "-q", f"ssh://{sshd.user}@127.0.0.1:{sport}{bare}", "main"], env=env)
                results.setdefault((name, "openssh"), []).append(time.perf_counter() - t0)
                # rack: fresh app
                app = f"{name}{rnd}"
                r = subprocess.run(ssh.split() + ["-p", str(rport), "git@127.0.0.1", f"apps:create {app}"], capture_output=True)
                assert r.returncode == 0, r.stderr
                peak = Peak(rack.proc.pid)
                th = threading.Thread(target=peak.run)
                th.start()
                t0 = time.perf_counter()
                run(["git", "-C", path, "push", "-q", "-o", "skip-deploy", f"ssh://git@127.0.0.1:{rport}/{app}", "main"], env=env)
                dt = time.perf_counter() - t0
                peak.stop = True
                th.join()
                results.setdefault((name, "rack"), []).append(dt)
                results.setdefault((name, "rack_rss"), []).append(peak.peak / 1024)
    finally:
        rack.stop()
        sshd.stop()
    print(f"{'repo':8} {'openssh s':>10} {'rack s':>8} {'ratio':>6} {'rack peak RSS MiB':>18}")
    for name in repos:
        o = sorted(results[(name, "openssh")])[len(results[(name, "openssh")]) // 2]
        r = sorted(results[(name, "rack")])[len(results[(name, "rack")]) // 2]
        rss = max(results[(name, "rack_rss")])
        print(f"{name:8} {o:10.2f} {r:8.2f} {r / o:6.2f} {rss:18.0f}")
    if a.keep:
        print(f"kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
