#!/usr/bin/env python3
"""Export and import of a Postgres resource through the rack, against the
by-hand path, in one run.

Fills a Postgres resource with about --gib GiB of rows, then times:
- by hand: `docker exec C pg_dump -Fc ... > file` and
  `docker exec -i C2 pg_restore ... < file` into a fresh resource;
- through the rack: `ssh ... resources:export src > file` and
  `ssh ... resources:import dst < file` into another fresh resource
  (the same pg_restore flags the rack uses);
and samples the rack's RSS every 100 ms during its two runs (streamed,
never buffered: it should stay flat). Prints throughput (database bytes
per second of each side), the ratio rack / by-hand and the RSS figures.

Usage: bench/resources_bench.py [--rack target/release/rack] [--gib 1]
Needs Docker and the rack-test/postgres:15 image (scripts/test makes it).
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from push_bench import bench_workspace, run  # noqa: E402
from ssh_latency import Server, free_port  # noqa: E402

NS = "resbench"
IMAGE = os.environ.get("RACK_TEST_POSTGRES_IMAGE", "rack-test/postgres:15")
RESTORE = "pg_restore --clean --if-exists --no-owner --no-acl --single-transaction --exit-on-error -U rack"


class Rss:
    """Samples a process's resident set every 100 ms."""

    def __init__(self, pid):
        self.pid, self.samples, self.stop = pid, [], False
        self.t = threading.Thread(target=self.loop, daemon=True)
        self.t.start()

    def now(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def loop(self):
        while not self.stop:
            self.samples.append(self.now())
            time.sleep(0.1)

    def done(self):
        self.stop = True
        self.t.join()
        return max(self.samples or [0])


def timed(argv, stdin=None, stdout=None):
    t = time.monotonic()
    subprocess.run(argv, stdin=stdin, stdout=stdout, check=True)
    return time.monotonic() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rack", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "rack"))
    p.add_argument("--gib", type=float, default=1.0)
    a = p.parse_args()
    tmp, key, ssh, data = bench_workspace("resbench-", a.rack, NS)
    with open(os.path.join(data, "rack.toml"), "a") as f:
        f.write(f'[resources]\nmax_import_bytes = 107374182400\n[resources.images]\npostgres = "{IMAGE}"\n')
    port = free_port()
    srv = Server("rack", port, "git", [a.rack, "server", "--data-dir", data, "--listen", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{free_port()}"], dict(os.environ, RUST_LOG="warn"), os.path.join(tmp, "rack.log"), 60)
    srv.start()
    sshc = ssh.split() + ["-p", str(port), "git@127.0.0.1"]
    ctr = lambda n: f"{NS}-res.{n}"  # noqa: E731
    try:
        for n in ["src", "hand", "viarack"]:
            run(sshc + [f"resources:create {n} postgres"], capture_output=True)
        # About 250 bytes a row; md5 text compresses like real data does.
        rows = int(a.gib * 1024**3 / 250)
        print(f"filling src with {rows} rows ...", flush=True)
        fill = ("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g*7)::text) || md5((g*13)::text) "
                "|| md5((g*17)::text) || md5((g*19)::text) || md5((g*23)::text) AS x "
                f"FROM generate_series(1, {rows}) g")
        run(["docker", "exec", ctr("src"), "psql", "-q", "-U", "rack", "-d", "src", "-c", fill])
        size = int(subprocess.run(["docker", "exec", ctr("src"), "psql", "-qtA", "-U", "rack", "-d", "src", "-c",
                                   "SELECT pg_database_size('src')"], capture_output=True, check=True).stdout)
        print(f"database size: {size / 1024**3:.2f} GiB", flush=True)
        hand_dump, rack_dump = os.path.join(tmp, "hand.dump"), os.path.join(tmp, "rack.dump")
        with open(hand_dump, "wb") as f:
            t_hand_export = timed(["docker", "exec", ctr("src"), "pg_dump", "-Fc", "-U", "rack", "-d", "src"], stdout=f)
        rss = Rss(srv.proc.pid)
        base = rss.now()
        with open(rack_dump, "wb") as f:
            t_rack_export = timed(sshc + ["resources:export src"], stdout=f)
        rss_export = rss.done()
        dump_bytes = os.path.getsize(rack_dump)
        with open(hand_dump, "rb") as f:
            t_hand_import = timed(["docker", "exec", "-i", ctr("hand")] + RESTORE.split() + ["-d", "hand"], stdin=f)
        rss = Rss(srv.proc.pid)
        with open(rack_dump, "rb") as f:
            t_rack_import = timed(sshc + ["resources:import viarack"], stdin=f)
        rss_import = rss.done()
        rows_back = subprocess.run(["docker", "exec", ctr("viarack"), "psql", "-qtA", "-U", "rack", "-d", "viarack", "-c",
                                    "SELECT count(*) FROM big"], capture_output=True, check=True).stdout.strip()
        assert int(rows_back) == rows, rows_back
        mib = size / 1024**2
        print(f"dump: {dump_bytes / 1024**2:.0f} MiB (hand {os.path.getsize(hand_dump) / 1024**2:.0f} MiB)")
        print("| step | by hand | through rack | ratio (rack/hand throughput) |")
        print("|---|---|---|---|")
        for name, h, r in [("export", t_hand_export, t_rack_export), ("import", t_hand_import, t_rack_import)]:
            print(f"| {name} | {h:.1f} s ({mib / h:.0f} MiB/s) | {r:.1f} s ({mib / r:.0f} MiB/s) | {h / r:.2f} |")
        print(f"rack RSS: {base / 1024**2:.0f} MiB before, peak {rss_export / 1024**2:.0f} MiB during export, "
              f"{rss_import / 1024**2:.0f} MiB during import")
    finally:
        for n in ["src", "hand", "viarack"]:
            subprocess.run(sshc + [f"resources:destroy {n} --confirm {n}"], capture_output=True)
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
