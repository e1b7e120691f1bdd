#!/usr/bin/env python3
"""SSH command round-trip latency: rack vs. OpenSSH's sshd.

Times the real OpenSSH client running `ssh -p PORT USER@127.0.0.1 apps`
against two servers on loopback, with the same client flags and key:

  * rack:    `rack server` on a temp data dir, the bench key registered as admin
             with `rack keys add bench --admin`; the command `apps` really runs.
  * openssh: Debian's /usr/sbin/sshd on a private config (own host key, own
             authorized_keys, `ForceCommand echo ok`): the floor that any SSH
             server pays for key exchange, auth and one exec channel.

Two measurements, each for both servers, interleaved so that machine noise
hits both alike:
  * sequential: N sessions one after the other (default 100 each);
  * concurrent: R rounds of C sessions started at once (default 5 x 50).

The client is pinned to KexAlgorithms=curve25519-sha256 by default: OpenSSH
9.2's client otherwise picks sntrup761x25519 with sshd (~100 ms of client CPU
per session here) but curve25519 with rack (russh lacks sntrup761), which
would credit rack with work the client skipped. `--kex default` drops the pin.

Reports p50 / p99 / mean in milliseconds, the failure count, and the ratio
rack / OpenSSH. Python 3 standard library only. Every server it starts is
stopped at the end, and it stops measuring after --max-seconds.

Usage:
  bench/ssh_latency.py [--rack target/release/rack] [-n 100]
                       [--concurrency 50] [--rounds 5] [--only rack|openssh]
                       [--kex curve25519-sha256|default] [--json FILE]
"""

import argparse
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVERS = ("openssh", "rack")


def log(msg):
    print(f"ssh_latency: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_busy(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tail(path, n=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def percentile(sorted_xs, p):
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_xs:
        return float("nan")
    k = (len(sorted_xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def summarize(samples):
    ok = sorted(s for s in samples if s is not None)
    return {
        "n": len(samples),
        "fail": sum(1 for s in samples if s is None),
        "p50": percentile(ok, 50),
        "p99": percentile(ok, 99),
        "mean": sum(ok) / len(ok) if ok else float("nan"),
    }


class Server:
    """One SSH server under test: how to start it and how to reach it."""

    def __init__(self, name, port, user, argv, env, log_path, ready_timeout):
        self.name = name
        self.port = port
        self.user = user
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.proc = None

    def start(self):
        if port_busy(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        logf.close()
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before "
                    f"listening on port {self.port}:\n{tail(self.log_path)}"
                )
            if port_busy(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not accept connections on port {self.port} within "
            f"{self.ready_timeout}s:\n{tail(self.log_path)}"
        )

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        # The server was started in its own session: signal its process group
        # (sshd's per-connection children, anything rack spawned), by its id.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="rack-ssh-bench-")
        self.key = os.path.join(self.tmp, "bench_key")
        self.servers = {}
        self.deadline = time.monotonic() + args.max_seconds
        self.ssh = shutil.which("ssh") or "/usr/bin/ssh"

    # ------------------------------------------------------------ set-up
    def run(self, argv, **kw):
        return subprocess.run(argv, check=True, **kw)

    def make_key(self):
        self.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rack-bench", "-f", self.key],
            stdin=subprocess.DEVNULL,
        )

    def setup_openssh(self):
        a = self.args
        port = a.sshd_port
        if port_busy(port):
            newport = free_port()
            log(f"port {port} is in use; OpenSSH gets {newport} instead")
            port = newport
        d = os.path.join(self.tmp, "sshd")
        os.makedirs(d)
        hostkey = os.path.join(d, "host_ed25519")
        self.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostkey], stdin=subprocess.DEVNULL)
        # sshd runs the command through the user's login shell, and bash run by
        # sshd sources ~/.bashrc (root's may run pyenv, nvm, ...: hundreds of
        # ms). Point HOME at an empty dir so the command stays trivial.
        home = os.path.join(d, "home")
        os.makedirs(home)
        authkeys = os.path.join(d, "authorized_keys")
        shutil.copy(self.key + ".pub", authkeys)
        conf = os.path.join(d, "sshd_config")
        with open(conf, "w") as f:
            f.write(
                f"""# private sshd for bench/ssh_latency.py
ListenAddress 127.0.0.1
Port {port}
HostKey {hostkey}
PidFile {os.path.join(d, "sshd.pid")}
AuthorizedKeysFile {authkeys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTTY no
MaxStartups 1000
LogLevel ERROR
SetEnv HOME={home}
ForceCommand echo ok
"""
            )
        # Debian's sshd refuses to start without its privilege separation dir.
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        check = subprocess.run([a.sshd, "-t", "-f", conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected the bench config: {check.stderr.strip()}")
        # sshd needs an existing local user; rack ignores the user name.
        user = a.sshd_user or getpass.getuser()
        self.servers["openssh"] = Server(
            "openssh",
            port,
            user,
            [a.sshd, "-D", "-e", "-f", conf, "-p", str(port)],
            dict(os.environ),
            os.path.join(d, "sshd.log"),
            a.start_timeout,
        )

    def setup_rack(self):
        a = self.args
        rack = os.path.abspath(a.rack)
        if not os.access(rack, os.X_OK):
            raise RuntimeError(
                f"no rack binary at {rack} (build it with `cargo build --release`, "
                f"pass --rack PATH, or use --only openssh)"
            )
        data = os.path.join(self.tmp, "rack-data")
        os.makedirs(data)
        env = dict(os.environ)
        env.pop("RACK_DATA_DIR", None)
        with open(self.key + ".pub", "rb") as pub:
            r = subprocess.run(
                [rack, "keys", "add", "bench", "--admin", "--data-dir", data],
                stdin=pub,
                capture_output=True,
                env=env,
            )
        if r.returncode != 0:
            raise RuntimeError(
                f"`rack keys add bench --admin` failed ({r.returncode}): "
                f"{r.stderr.decode(errors='replace').strip()}"
            )
        port = a.rack_port or free_port()
        self.servers["rack"] = Server(
            "rack",
            port,
            a.rack_user,
            [
                rack, "server", "--data-dir", data,
                "--listen", f"127.0.0.1:{port}", "--http", "127.0.0.1:0",
            ],
            env,
            os.path.join(self.tmp, "rack-server.log"),
            a.start_timeout,
        )

    # --------------------------------------------------------- measuring
    def client_argv(self, srv, verbose=False):
        kex = self.args.kex
        extra = ["-o", f"KexAlgorithms={kex}"] if kex and kex != "default" else []
        if verbose:
            extra.append("-v")
        return [
            self.ssh,
            *extra,
            "-p", str(srv.port),
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes",
            "-i", self.key,
            "-F", "/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={self.args.session_timeout}",
            f"{srv.user}@127.0.0.1",
            self.args.command,
        ]

    def one(self, srv, argv=None):
        """One session: its latency in ms, or (None, why) on failure."""
        argv = argv or self.client_argv(srv)
        t0 = time.perf_counter()
        try:
            r = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.args.session_timeout,
            )
        except subprocess.TimeoutExpired:
            return None, "timed out"
        dt = (time.perf_counter() - t0) * 1000.0
        if r.returncode != 0:
            why = r.stderr.decode(errors="replace").strip().splitlines()
            return None, f"exit {r.returncode}: {why[-1] if why else ''}"
        return dt, None

    def algorithms(self, name):
        """What the client negotiated with this server (from `ssh -v`)."""
        srv = self.servers[name]
        r = subprocess.run(
            self.client_argv(srv, verbose=True),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.args.session_timeout,
        )
        found = {}
        for line in r.stderr.splitlines():
            m = re.match(r"debug1: kex: (algorithm|host key algorithm|server->client cipher): (\S+)", line)
            if m:
                found[{"algorithm": "kex", "host key algorithm": "hostkey",
                       "server->client cipher": "cipher"}[m.group(1)]] = m.group(2)
        return found

    def warm_up(self, name):
        srv = self.servers[name]
        for _ in range(3):
            dt, why = self.one(srv)
            if dt is None:
                raise RuntimeError(
                    f"{name}: `ssh ... {self.args.command}` failed during warm-up: {why}\n"
                    f"server log:\n{tail(srv.log_path)}"
                )

    def note_failure(self, name, why):
        self.failures.setdefault(name, [])
        if len(self.failures[name]) < 5:
            self.failures[name].append(why)

    def sequential(self, names):
        out = {n: [] for n in names}
        for i in range(self.args.n):
            if time.monotonic() > self.deadline:
                log(f"--max-seconds reached during sequential run {i}; stopping early")
                self.truncated = True
                break
            # Alternate which server goes first.
            order = names if i % 2 == 0 else list(reversed(names))
            for name in order:
                dt, why = self.one(self.servers[name])
                out[name].append(dt)
                if why:
                    self.note_failure(name, why)
        return out

    def concurrent_round(self, name):
        srv = self.servers[name]
        c = self.args.concurrency
        argv = self.client_argv(srv)
        results = [None] * c
        barrier = threading.Barrier(c)

        def worker(i):
            try:
                barrier.wait(timeout=30)
            except threading.BrokenBarrierError:
                pass
            results[i] = self.one(srv, argv)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(c)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = (time.perf_counter() - t0) * 1000.0
        for dt, why in results:
            if why:
                self.note_failure(name, why)
        return [dt for dt, _ in results], wall

    def concurrent(self, names):
        out = {n: [] for n in names}
        walls = {n: [] for n in names}
        for r in range(self.args.rounds):
            if time.monotonic() > self.deadline:
                log(f"--max-seconds reached before concurrent round {r}; stopping early")
                self.truncated = True
                break
            order = names if r % 2 == 0 else list(reversed(names))
            for name in order:
                samples, wall = self.concurrent_round(name)
                out[name].extend(samples)
                walls[name].append(wall)
                time.sleep(0.5)  # let the server reap the last round's sessions
        return out, walls

    # ------------------------------------------------------------ driver
    def main(self):
        a = self.args
        names = [a.only] if a.only else list(SERVERS)
        self.failures = {}
        self.truncated = False
        self.algos = {}
        self.load_start = os.getloadavg()
        self.make_key()
        if "openssh" in names:
            self.setup_openssh()
        if "rack" in names:
            self.setup_rack()
        for name in names:
            log(f"starting {name} on 127.0.0.1:{self.servers[name].port}")
            self.servers[name].start()
            self.warm_up(name)
            self.algos[name] = self.algorithms(name)
        log(f"sequential: {a.n} sessions per server, interleaved")
        seq = self.sequential(names)
        log(f"concurrent: {a.rounds} rounds of {a.concurrency} sessions at once per server")
        conc, walls = self.concurrent(names)
        return self.report(names, seq, conc, walls)

    def report(self, names, seq, conc, walls):
        a = self.args
        client = subprocess.run([self.ssh, "-V"], capture_output=True, text=True).stderr.strip()
        res = {
            "command": a.command,
            "kex_option": a.kex,
            "client": client,
            "cpus": os.cpu_count(),
            "truncated": self.truncated,
            "algorithms": self.algos,
            "loadavg_start": self.load_start,
            "loadavg_end": os.getloadavg(),
            "sequential": {n: summarize(seq[n]) for n in names},
            "concurrent": {n: summarize(conc[n]) for n in names},
            "concurrent_round_wall_ms": {
                n: (sum(walls[n]) / len(walls[n]) if walls[n] else float("nan")) for n in names
            },
            "concurrency": a.concurrency,
            "rounds": a.rounds,
            "failures": self.failures,
        }
        print()
        pin = f"-o KexAlgorithms={a.kex} " if a.kex and a.kex != "default" else ""
        print(f"SSH round trip, ms: `ssh {pin}-p PORT USER@127.0.0.1 {a.command}` ({client}; {os.cpu_count()} CPUs)")
        hdr = f"{'mode':<28} {'server':<8} {'n':>5} {'fail':>5} {'p50':>8} {'p99':>8} {'mean':>8}"
        for n in names:
            al = self.algos.get(n, {})
            print(f"{n}: kex {al.get('kex', '?')}, host key {al.get('hostkey', '?')}, cipher {al.get('cipher', '?')}")
        l0, l1 = res["loadavg_start"], res["loadavg_end"]
        print(f"load average (1/5/15 min) at start {l0[0]:.2f}/{l0[1]:.2f}/{l0[2]:.2f}, "
              f"at end {l1[0]:.2f}/{l1[1]:.2f}/{l1[2]:.2f}")
        print(hdr)
        print("-" * len(hdr))
        modes = [
            ("sequential", "sequential"),
            (f"concurrent ({a.concurrency} at once x {a.rounds})", "concurrent"),
        ]
        for label, key in modes:
            for n in names:
                s = res[key][n]
                print(
                    f"{label:<28} {n:<8} {s['n']:>5} {s['fail']:>5} "
                    f"{s['p50']:>8.1f} {s['p99']:>8.1f} {s['mean']:>8.1f}"
                )
        for n in names:
            print(f"mean wall time of one concurrent round, {n}: {res['concurrent_round_wall_ms'][n]:.0f} ms")
        if len(names) == 2:
            ratios = {}
            for _, key in modes:
                r, o = res[key]["rack"], res[key]["openssh"]
                ratios[key] = {m: (r[m] / o[m] if o[m] else float("nan")) for m in ("p50", "p99", "mean")}
                print(
                    f"ratio rack/openssh, {key:<10}: p50 x{ratios[key]['p50']:.2f}  "
                    f"p99 x{ratios[key]['p99']:.2f}  mean x{ratios[key]['mean']:.2f}"
                )
            res["ratio_rack_over_openssh"] = ratios
            if self.algos.get("rack", {}).get("kex") != self.algos.get("openssh", {}).get("kex"):
                print("note: the two servers negotiated different key exchanges, so the client "
                      "did different work; pass --kex ALG to compare like with like")
        for n, whys in self.failures.items():
            for w in whys:
                print(f"failure ({n}): {w}")
        if self.truncated:
            print("(stopped early: --max-seconds reached)")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=2)
        return 1 if any(res[k][n]["fail"] for k in ("sequential", "concurrent") for n in names) else 0

    def cleanup(self):
        for srv in self.servers.values():
            try:
                srv.stop()
            except Exception as e:  # keep stopping the others
                log(f"stopping {srv.name}: {e}")
        if self.args.keep_tmp:
            log(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    p.add_argument("--rack", default=os.path.join(target, "release", "rack"),
                   help="path of the rack binary (default: %(default)s)")
    p.add_argument("-n", type=int, default=100, help="sequential sessions per server (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=50, help="sessions started at once (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="concurrent rounds per server (default: %(default)s)")
    p.add_argument("--only", choices=SERVERS, help="measure one server only")
    p.add_argument("--command", default="apps", help="remote command (default: %(default)s)")
    p.add_argument(
        "--kex",
        metavar="ALG",
        default="curve25519-sha256",
        help="KexAlgorithms for the client, for both servers (default: %(default)s, the best one both "
        "rack's russh and OpenSSH 9.2 have); 'default' = the client's own preference",
    )
    p.add_argument("--sshd", default="/usr/sbin/sshd", help="OpenSSH server binary (default: %(default)s)")
    p.add_argument("--sshd-port", type=int, default=2299, help="OpenSSH port (default: %(default)s)")
    p.add_argument("--sshd-user", help="user for OpenSSH (must exist; default: the current user)")
    p.add_argument("--rack-port", type=int, default=0, help="rack SSH port (default: a free one)")
    p.add_argument("--rack-user", default="git", help="SSH user for rack (ignored by rack; default: %(default)s)")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds to wait for a server to listen")
    p.add_argument("--session-timeout", type=int, default=30, help="seconds before one ssh session counts as failed")
    p.add_argument("--max-seconds", type=float, default=600, help="stop measuring after this long (default: %(default)s)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (keys, configs, server logs)")
    return p.parse_args()


def main():
    args = parse_args()
    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return bench.main()
    except RuntimeError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.cleanup()


if __name__ == "__main__":
    sys.exit(main())
