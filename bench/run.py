#!/usr/bin/env python3
"""Tidegate benchmark orchestrator: runs every scenario against Tidegate (and, for
density and fan-out, Pushpin and Nchan in the same run), writes results JSON,
BENCHMARKS.md and PNG plots. Invoked by bench/run.sh; every step is bounded in time.

`--only a,b` runs some scenarios and merges their results into the existing results
file (the other scenarios' numbers are kept, with the date of the run that made them
in `scenario_runs`)."""

import argparse
import resource
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", "release")
GW = os.path.join(TARGET, "tidegate")
BENCH = os.path.join(TARGET, "tidegate-bench")
SECRET = "bench-secret"
EXTRACTORS = json.dumps({"greeting": {"name": {"stable_field_index": 0,
                         "event": {"json_pointer": "/data/name"}, "jwt": {"json_pointer": "/sub"}}}})
CLK = os.sysconf("SC_CLK_TCK")
WORK = tempfile.mkdtemp(prefix="tgbench-")
STARTED = []  # processes this script started, stopped at exit


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_secs(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / CLK


def srv_rss(server):
    return rss_kib(server.pid) + sum(rss_kib(p.pid) for p in getattr(server, "extra", []))


def srv_cpu(server):
    return cpu_secs(server.pid) + sum(cpu_secs(p.pid) for p in getattr(server, "extra", []))


class Server:
    def __init__(self, name, proc, inbound, publish):
        self.name, self.proc, self.inbound, self.publish = name, proc, inbound, publish

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc in STARTED:
            STARTED.remove(self.proc)


def spawn(cmd, env=None, cwd=None, stdout=None, stderr=None):
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout or subprocess.DEVNULL,
                         stderr=stderr or subprocess.DEVNULL, start_new_session=True)
    STARTED.append(p)
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def start_tidegate(durability="fsync", extra=None):
    d = tempfile.mkdtemp(dir=WORK, prefix="gw-")
    env = dict(os.environ, INBOUND_PORT="0", API_HTTP_PORT="0", TIDEGATE_INBOUND_HOST="127.0.0.1",
               TIDEGATE_LOG_DIR=os.path.join(d, "log"), TIDEGATE_INTERNAL_TOKEN="bench",
               TIDEGATE_LOG_DURABILITY=durability, JWT_SECRET_KEY=SECRET, EXTRACTORS=EXTRACTORS,
               MAX_CONNECTIONS_PER_MINUTE="0", TIDEGATE_MAX_CONNECTIONS="100000", LOG_LEVEL="warn")
    env.update(extra or {})
    out = open(os.path.join(d, "stdout"), "w+")
    p = spawn([GW], env=env, stdout=out, stderr=open(os.path.join(d, "stderr"), "w"))
    end = time.time() + 20
    while time.time() < end:
        out.seek(0)
        for line in out.read().splitlines():
            if line.startswith("tidegate listening"):
                inbound = line.split("inbound=")[1].split()[0]
                return Server("tidegate", p, inbound, inbound)
        if p.poll() is not None:
            raise RuntimeError(f"tidegate exited: {open(os.path.join(d, 'stderr')).read()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError("tidegate did not start")


def render(template, out, **kw):
    text = open(os.path.join(ROOT, "bench", "peers", template)).read()
    for k, v in kw.items():
        text = text.replace(f"@{k}@", str(v))
    with open(out, "w") as f:
        f.write(text)


def start_nchan():
    d = tempfile.mkdtemp(dir=WORK, prefix="nchan-")
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    render("nchan.conf.in", conf, RUNDIR=d, PORT=port)
    p = spawn(["nginx", "-c", conf, "-p", d, "-g", "daemon off;"],
              stderr=open(os.path.join(d, "stderr"), "w"))
    wait_port(port)
    return Server("nchan", p, f"127.0.0.1:{port}", f"127.0.0.1:{port}")


def start_pushpin():
    d = tempfile.mkdtemp(dir=WORK, prefix="pushpin-")
    os.makedirs(os.path.join(d, "log"))
    origin_port = free_port()
    origin = spawn([BENCH, "grip-origin", "--listen", f"127.0.0.1:{origin_port}", "--duration", "3600"])
    wait_port(origin_port)
    offset = 3000 + (os.getpid() % 500) * 10
    http_port = free_port()
    render("routes.in", os.path.join(d, "routes"), ORIGIN=f"127.0.0.1:{origin_port}")
    render("pushpin.conf.in", os.path.join(d, "pushpin.conf"), RUNDIR=d, HTTP_PORT=http_port,
           PORT_OFFSET=offset)
    render("zurl.conf.in", os.path.join(d, "zurl.conf"), RUNDIR=d)
    zurl = spawn(["zurl", "--config=" + os.path.join(d, "zurl.conf")])
    p = spawn(["pushpin", "--config", os.path.join(d, "pushpin.conf")],
              stderr=open(os.path.join(d, "stderr"), "w"))
    wait_port(http_port)
    wait_port(5561 + offset)
    time.sleep(2)  # handler and proxy finish connecting their ZeroMQ sockets
    s = Server("pushpin", p, f"127.0.0.1:{http_port}", f"127.0.0.1:{5561 + offset}")
    s.origin = origin
    s.extra = [zurl]
    return s


def start(target, **kw):
    return {"tidegate": start_tidegate, "nchan": start_nchan, "pushpin": start_pushpin}[target](**kw)


def stop(server):
    server.stop()
    for o in [getattr(server, "origin", None)] + getattr(server, "extra", []):
        if o is not None and o.poll() is None:
            os.killpg(o.pid, signal.SIGTERM)
            o.wait()
            STARTED.remove(o)


class Subs:
    """K client processes holding connections until stopped (or their own deadline)."""

    def __init__(self, target, transport, addr, counts, offset=0, duration=120, slow=0, extra=()):
        self.dir = tempfile.mkdtemp(dir=WORK, prefix="subs-")
        self.stop_file = os.path.join(self.dir, "stop")
        self.calm_file = os.path.join(self.dir, "calm")
        self.procs = []
        off = offset
        for i, n in enumerate(counts):
            p = spawn([BENCH, "subs", "--target", target, "--transport", transport, "--addr", addr,
                       "--n", str(n), "--user-offset", str(off), "--secret", SECRET,
                       "--duration", str(duration), "--slow", str(slow if i == 0 else 0),
                       "--ready-file", os.path.join(self.dir, f"ready{i}"),
                       "--stop-file", self.stop_file, "--out", os.path.join(self.dir, f"out{i}")]
                      + [str(x) for x in extra] + (["--calm-file", self.calm_file] if extra else []),
                      stderr=open(os.path.join(self.dir, f"err{i}"), "w"))
            self.procs.append(p)
            off += n

    def wait_ready(self, timeout=180):
        end = time.time() + timeout
        res = []
        for i, p in enumerate(self.procs):
            f = os.path.join(self.dir, f"ready{i}")
            while not os.path.exists(f) and time.time() < end and p.poll() is None:
                time.sleep(0.1)
            time.sleep(0.05)
            res.append(json.load(open(f)) if os.path.exists(f) else {"ready": 0, "failed": -1})
        return {"ready": sum(r["ready"] for r in res), "failed": sum(r["failed"] for r in res),
                "connect_secs": max(r.get("connect_secs", 0) for r in res),
                "first_error": next((r.get("first_error") for r in res if r.get("first_error")), None)}

    def cpu(self):
        return sum(cpu_secs(p.pid) for p in self.procs if p.poll() is None)

    def finish(self, stop_content="", raw=False):
        self.client_cpu_s = self.cpu()
        tmp = self.stop_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(stop_content)
        os.rename(tmp, self.stop_file)  # readers never see a half-written stop file
        outs = []
        for i, p in enumerate(self.procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            STARTED.remove(p)
            f = os.path.join(self.dir, f"out{i}")
            if os.path.exists(f):
                outs.append(json.load(open(f)))
        return outs if raw else merge_subs(outs)


def merge_hist(hs, keep_buckets=False):
    buckets = {}
    for h in hs:
        for v, c in h.get("buckets", []):
            buckets[v] = buckets.get(v, 0) + c
    items = sorted(buckets.items())
    total = sum(c for _, c in items)

    def q(x):
        if not total:
            return 0
        need, acc = x * total, 0
        for v, c in items:
            acc += c
            if acc >= need:
                return v
        return items[-1][0]
    out = {"count": total, "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99),
           "p999_us": q(0.999), "max_us": items[-1][0] if items else 0}
    if keep_buckets:
        out["buckets"] = [[v, c] for v, c in items]
    return out


def merge_subs(outs):
    if not outs:
        return {"ready": 0, "deliveries": 0, "latency": merge_hist([])}
    return {"ready": sum(o["ready"] for o in outs), "failed": sum(o["failed"] for o in outs),
            "closed_by_server": sum(o["closed_by_server"] for o in outs),
            "deliveries": sum(o["deliveries"] for o in outs),
            "fast_min_received": min(o["fast_min_received"] for o in outs if o["n"] > 0),
            "slow_received": sum(o["slow_received"] for o in outs),
            "first_error": next((o["first_error"] for o in outs if o["first_error"]), None),
            "latency": merge_hist([o["latency"] for o in outs])}


def publish(target, addr, **kw):
    out = os.path.join(WORK, f"pub-{time.time_ns()}.json")
    cmd = [BENCH, "pub", "--target", target, "--addr", addr, "--out", out]
    for k, v in kw.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    subprocess.run(cmd, timeout=float(kw.get("duration", 10)) + 30, check=True)
    return json.load(open(out))


def split(n, per):
    k = max(1, -(-n // per))
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


# ---------------------------------------------------------------- scenarios

def density(cfg, target, transport):
    server = start(target)
    try:
        time.sleep(1)
        base = srv_rss(server)
        stages, subs, opened = [], [], 0
        for n in cfg["density_stages"]:
            add = n - opened
            s = Subs(target, transport, server.inbound, split(add, cfg["per_proc"]), offset=opened,
                     duration=cfg["density_hold"])
            r = s.wait_ready()
            subs.append(s)
            opened += r["ready"]
            time.sleep(cfg["settle"])
            rss = srv_rss(server)
            stages.append({"target_n": n, "open": opened, "failed": r["failed"], "rss_kib": rss,
                           "kib_per_conn": (rss - base) / max(opened, 1), "first_error": r["first_error"],
                           "connect_secs": r["connect_secs"]})
            log(f"density {target}/{transport}: {opened} open, rss {rss} KiB "
                f"({stages[-1]['kib_per_conn']:.2f} KiB/conn)")
            if r["failed"]:
                log(f"  failures: {r['failed']} first error: {r['first_error']}")
        c0, t0 = srv_cpu(server), time.time()
        time.sleep(cfg["idle_window"])
        c1, t1 = srv_cpu(server), time.time()
        for s in subs:
            s.finish()
        idle_us = (c1 - c0) * 1e6 / max(opened, 1) / (t1 - t0)
        return {"target": target, "transport": transport, "base_rss_kib": base, "stages": stages,
                "open": opened, "kib_per_conn": stages[-1]["kib_per_conn"],
                "idle_cpu_us_per_conn_s": idle_us, "idle_window_s": t1 - t0,
                "idle_cpu_pct": (c1 - c0) * 100 / (t1 - t0)}
    finally:
        stop(server)


def fanout(cfg, target, transport="sse"):
    server = start(target)
    results = []
    try:
        S = cfg["fanout_subs"]
        s = Subs(target, transport, server.inbound, split(S, cfg["fanout_per_proc"]),
                 duration=cfg["fanout_hold"])
        r = s.wait_ready()
        log(f"fanout {target}: {r['ready']} subscribers ready")
        s.finish()
        for rate in cfg["fanout_rates"]:
            s = Subs(target, transport, server.inbound, split(S, cfg["fanout_per_proc"]),
                     offset=0, duration=cfg["fanout_hold"])
            r = s.wait_ready()
            c0 = srv_cpu(server)
            cc0 = s.cpu()
            prof = None
            if cfg.get("profile") and target == "tidegate" and rate == cfg["fanout_rates"][-1]:
                prof = start_profile(server.pid, "fanout")
            p = publish(target, server.publish, rate=rate, count=int(rate * cfg["fanout_secs"]),
                        duration=cfg["fanout_secs"] + 5, concurrency=cfg["pub_conc"], threads=1,
                        event_type="bench.shared", channel="shared")
            time.sleep(cfg["drain"])
            c1 = srv_cpu(server)
            m = s.finish()
            if prof:
                finish_profile(prof)
            expected = p["ok_events"] * r["ready"]
            row = {"target": target, "transport": transport, "rate": rate, "subs": r["ready"],
                   "published": p["ok_events"], "pub_errors": p["errors"],
                   "deliveries": m["deliveries"], "expected": expected,
                   "lost": expected - m["deliveries"],
                   "deliveries_per_s": m["deliveries"] / p["elapsed_secs"],
                   "gateway_cpu_s": c1 - c0, "client_cpu_s": s.client_cpu_s - cc0,
                   "pub_secs": p["elapsed_secs"], **{k: m["latency"][k] for k in
                                                   ("p50_us", "p99_us", "p999_us", "max_us")}}
            results.append(row)
            log(f"fanout {target} rate {rate}/s: {row['deliveries_per_s']:.0f} deliveries/s "
                f"p99 {row['p99_us']/1000:.1f} ms lost {row['lost']}")
    finally:
        stop(server)
    return results


def start_profile(pid, name):
    """perf call-graph profile of the server for a few seconds (if perf works here)."""
    if not shutil.which("perf"):
        return None
    out = os.path.join(ROOT, "bench", "results", f"perf-{name}.data")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    p = subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", out, "--",
                          "sleep", "4"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (p, out, name)


def finish_profile(prof):
    p, out, name = prof
    try:
        p.wait(30)
        rep = subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children", "--percent-limit",
                              "1.5", "-g", "none"], capture_output=True, text=True, timeout=120).stdout
        open(os.path.join(ROOT, "bench", "results", f"profile-{name}.txt"), "w").write(rep)
    except Exception as e:  # a profile is evidence, not a requirement
        log(f"profile {name}: {e}")
    finally:
        try:
            os.remove(out)
        except OSError:
            pass


def ingest(cfg):
    rows = []
    for rep in range(cfg["repeats"]):
        server = start_tidegate()
        prof = start_profile(server.pid, "ingest") if cfg.get("profile") and rep == 0 else None
        try:
            c0, g0 = srv_cpu(server), generator_cpu()
            p = publish("tidegate", server.publish, batch=cfg["ingest_batch"], rate=0,
                        count=cfg["ingest_count"], duration=cfg["ingest_secs"], concurrency=4,
                        threads=1, event_type="bench.nobody")
            p["server_cores"] = (srv_cpu(server) - c0) / p["elapsed_secs"]
            p["client_cores"] = (generator_cpu() - g0) / p["elapsed_secs"]
            rows.append(p)
            log(f"ingest-drop rep {rep}: {p['events_per_sec']:.0f} events/s errors {p['errors']}, "
                f"cores used: gateway {p['server_cores']:.2f}, generator {p['client_cores']:.2f}")
            if prof:
                finish_profile(prof)
        finally:
            stop(server)
    return rows


def durable(cfg):
    rows = {"fsync": [], "buffered": []}
    for rep in range(cfg["repeats"]):
        for mode in ("fsync", "buffered"):
            server = start_tidegate(mode)
            prof = start_profile(server.pid, f"durable-{mode}") if cfg.get("profile") and rep == 0 else None
            try:
                c0, g0 = srv_cpu(server), generator_cpu()
                p = publish("tidegate", server.publish, batch=0, rate=0, count=cfg["durable_count"],
                            duration=cfg["durable_secs"], concurrency=cfg["durable_conc"], threads=1,
                            event_type="bench.nobody")
                p["server_cores"] = (srv_cpu(server) - c0) / p["elapsed_secs"]
                p["client_cores"] = (generator_cpu() - g0) / p["elapsed_secs"]
                rows[mode].append(p)
                log(f"durable {mode} rep {rep}: {p['requests_per_sec']:.0f} req/s "
                    f"p99 {p['request_latency']['p99_us']/1000:.2f} ms errors {p['errors']}, "
                    f"cores used: gateway {p['server_cores']:.2f}, generator {p['client_cores']:.2f}")
                if prof:
                    finish_profile(prof)
            finally:
                stop(server)
    return rows


def slow_client(cfg):
    """Scenario 6, run twice on fresh gateways: with the never-reading subscriber and,
    as a control, without it, so that a stall caused by the slow client can be told
    from one caused by the load itself (both cores are shared with the generator)."""
    row = slow_run(cfg, with_slow=True)
    row["control"] = slow_run(cfg, with_slow=False)
    return row


def slow_run(cfg, with_slow):
    server = start_tidegate()
    try:
        slow = None
        if with_slow:
            slow = Subs("tidegate", "sse", server.inbound, [1], offset=100000, slow=1,
                        duration=cfg["fanout_hold"])
        fast = Subs("tidegate", "sse", server.inbound, [cfg["slow_fast_subs"]], duration=cfg["fanout_hold"])
        if slow:
            slow.wait_ready()
        fast.wait_ready()
        rss0 = srv_rss(server)
        c0, cc0 = srv_cpu(server), fast.cpu()
        p = publish("tidegate", server.publish, rate=cfg["slow_rate"],
                    count=int(cfg["slow_rate"] * cfg["slow_secs"]), duration=cfg["slow_secs"] + 5,
                    concurrency=4, threads=1, event_type="bench.shared", payload_bytes=cfg["slow_payload"])
        time.sleep(cfg["drain"])
        rss1 = srv_rss(server)
        c1 = srv_cpu(server)
        f = fast.finish()
        s = slow.finish() if slow else {"slow_received": 0, "closed_by_server": False}
        row = {"published": p["ok_events"], "payload_bytes": cfg["slow_payload"], "rate": cfg["slow_rate"],
               "fast_subs": cfg["slow_fast_subs"], "fast_min_received": f["fast_min_received"],
               "fast_lost": p["ok_events"] * cfg["slow_fast_subs"] - f["deliveries"],
               "fast_p99_us": f["latency"]["p99_us"], "fast_max_us": f["latency"]["max_us"],
               "slow_received": s["slow_received"], "slow_closed_by_server": s["closed_by_server"],
               "rss_before_kib": rss0, "rss_after_kib": rss1, "server_cpu_s": c1 - c0,
               "client_cpu_s": fast.client_cpu_s - cc0}
        log(f"slow client ({'with' if with_slow else 'without, control'}): fast max "
            f"{row['fast_max_us']/1000:.1f} ms, p99 {row['fast_p99_us']/1000:.1f} ms, lost {row['fast_lost']}, "
            f"slow closed {row['slow_closed_by_server']}, server/client CPU {row['server_cpu_s']:.1f}/"
            f"{row['client_cpu_s']:.1f} s")
        return row
    finally:
        stop(server)


JITTER_COUNTERS = ("n", "ready", "failed", "received", "distinct", "duplicates", "foreign", "expected",
                   "missing", "unacked_received", "conns_with_missing", "conns_with_duplicates", "cuts",
                   "reconnects", "reconnect_errors", "server_closes", "nothing_missed", "not_caught_up",
                   "lost_notices", "disconnect_notices")


def jitter(cfg):
    """Scenario 5: every connection is cut on its own random schedule and resumes with
    Last-Event-ID while events flow; Tidegate only (see report.py for why)."""
    server = start_tidegate()
    try:
        n, groups, rate = cfg["jitter_conns"], cfg["jitter_groups"], cfg["jitter_rate"]
        extra = ["--jitter-period", cfg["jitter_period"], "--period-jitter", cfg["jitter_period_jitter"],
                 "--outage", cfg["jitter_outage"], "--outage-jitter", cfg["jitter_outage_jitter"],
                 "--groups", groups, "--event-type", "bench.jitter", "--seed", cfg["jitter_seed"]]
        s = Subs("tidegate", cfg["jitter_transport"], server.inbound, split(n, cfg["jitter_per_proc"]),
                 duration=cfg["jitter_secs"] + 90, extra=extra)
        r = s.wait_ready()
        log(f"jitter: {r['ready']} connections ready ({r['failed']} failed) in {r['connect_secs']:.1f} s")
        rss0, c0, cc0 = srv_rss(server), srv_cpu(server), s.cpu()
        load = [os.getloadavg()[0]]
        rss_peak = rss0
        box = {}

        def pub():
            box["p"] = publish("tidegate", server.publish, rate=rate, count=int(rate * cfg["jitter_secs"]),
                               duration=cfg["jitter_secs"] + 10, concurrency=cfg["jitter_pub_conc"],
                               threads=1, event_type="bench.jitter", type_groups=groups)
        th = threading.Thread(target=pub, daemon=True)
        t0 = time.time()
        th.start()
        while th.is_alive():
            th.join(2)
            load.append(os.getloadavg()[0])
            rss_peak = max(rss_peak, srv_rss(server))
        pub_secs = time.time() - t0
        if "p" not in box:
            raise RuntimeError("jitter publisher failed")
        p = box["p"]
        # No more cuts; connections still away come back and catch up.
        open(s.calm_file, "w").close()
        time.sleep(cfg["jitter_outage"] + cfg["jitter_outage_jitter"] + cfg["jitter_drain"])
        c1, cc1, rss1 = srv_cpu(server), s.cpu(), srv_rss(server)
        outs = s.finish(stop_content=json.dumps({"sent": p["sent_events"], "failed": p["failed_seqs"]}),
                        raw=True)
        if not outs:
            raise RuntimeError("no jitter client output")
        row = {k: sum(o[k] for o in outs) for k in JITTER_COUNTERS}
        row.update({k: outs[0][k] for k in ("transport", "groups", "seed", "period_s", "period_jitter_s",
                                             "outage_s", "outage_jitter_s")})
        row["acked_known"] = all(o["acked_known"] for o in outs)
        row["worst_conn_missing"] = max(o["worst_conn_missing"] for o in outs)
        row["max_ranges_per_conn"] = max(o["max_ranges_per_conn"] for o in outs)
        row["missing_examples"] = [e for o in outs for e in o.get("missing_examples", [])][:8]
        row["first_error"] = next((o["first_error"] for o in outs if o["first_error"]), None)
        row["reconnect_first_error"] = next((o["reconnect_first_error"] for o in outs
                                             if o["reconnect_first_error"]), None)
        for h in ("replay_first", "replay_catchup", "live_latency", "replayed_latency"):
            row[h] = merge_hist([o[h] for o in outs], keep_buckets=h.startswith("replay_"))
        row["delivered_pct"] = ((row["expected"] - row["missing"]) * 100 / row["expected"]
                                if row["expected"] else None)
        row.update({"rate": rate, "per_conn_rate": rate / groups, "secs": cfg["jitter_secs"],
                    "published": p["ok_events"], "sent": p["sent_events"], "pub_errors": p["errors"],
                    "pub_first_error": p["first_error"], "unacked": p["unacked_events"],
                    "pub_secs": p["elapsed_secs"], "wall_secs": pub_secs,
                    "client_procs": len(outs), "gateway_cpu_s": c1 - c0, "client_cpu_s": cc1 - cc0,
                    "rss_before_kib": rss0, "rss_peak_kib": rss_peak, "rss_after_kib": rss1,
                    "load_min": min(load), "load_max": max(load),
                    "load_mean": statistics.mean(load)})
        log(f"jitter: delivered {row['delivered_pct'] if row['delivered_pct'] is not None else float('nan'):.4f} % "
            f"missing {row['missing']} dup {row['duplicates']} cuts {row['cuts']} reconnect errors "
            f"{row['reconnect_errors']} replay first p99 {row['replay_first']['p99_us']/1000:.0f} ms "
            f"catch-up p99 {row['replay_catchup']['p99_us']/1000:.0f} ms (load {row['load_mean']:.2f})")
        return row
    finally:
        stop(server)


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            return "?"
    mem = sh("free -g | awk '/Mem:/{print $2}'")
    return {"nproc": os.cpu_count(), "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
            "mem_gib": mem, "kernel": platform.release(), "rustc": sh("rustc --version"),
            "tidegate": sh("git -C %s rev-parse --short HEAD 2>/dev/null" % ROOT) or "?",
            "pushpin": sh("pushpin --version 2>&1 | head -1"), "nginx": sh("nginx -v 2>&1"),
            "nchan": sh("dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null"),
            "nofile": sh("ulimit -n"), "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")}


CONFIGS = {
    "smoke": dict(density_stages=[200], per_proc=200, settle=0.5, idle_window=2, density_hold=60,
                  fanout_subs=50, fanout_per_proc=50, fanout_rates=[200], fanout_secs=1, fanout_hold=30,
                  pub_conc=2, drain=0.7, repeats=1, ingest_batch=500, ingest_count=50000, ingest_secs=1.5,
                  durable_count=3000, durable_secs=1.5, durable_conc=16, slow_fast_subs=20, slow_rate=500,
                  slow_secs=1, slow_payload=2000, jitter_conns=100, jitter_per_proc=100, jitter_groups=4,
                  jitter_rate=200, jitter_secs=4, jitter_period=1.5, jitter_period_jitter=0.5,
                  jitter_outage=0.5, jitter_outage_jitter=0.2, jitter_seed=1, jitter_pub_conc=4,
                  jitter_drain=2, jitter_transport="sse", peers=False),
    "full": dict(density_stages=[1000, 5000, 10000, 19000], per_proc=5000, settle=3, idle_window=30,
                 density_hold=400, fanout_subs=1000, fanout_per_proc=500,
                 fanout_rates=[100, 300, 1000, 1200, 1500, 2000], fanout_secs=5, fanout_hold=120, pub_conc=32, drain=2,
                 repeats=3, ingest_batch=1000, ingest_count=20_000_000, ingest_secs=5,
                 durable_count=2_000_000, durable_secs=5, durable_conc=64, slow_fast_subs=200,
                 slow_rate=500, slow_secs=10, slow_payload=2000, jitter_conns=4000, jitter_per_proc=2000,
                 jitter_groups=10, jitter_rate=1000, jitter_secs=75, jitter_period=15,
                 jitter_period_jitter=3, jitter_outage=2, jitter_outage_jitter=0.5, jitter_seed=1,
                 jitter_pub_conc=48, jitter_drain=5, jitter_transport="sse", peers=True, profile=True),
}


def generator_cpu():
    """CPU seconds of finished (waited-for) generator processes, e.g. one `publish`."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_ticks():
    """(steal, total) jiffies of the whole machine: the hypervisor's steal time tells a
    noisy host from a slow gateway."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[7] if len(v) > 7 else 0, sum(v[:8])


def merge_results(old, new, ran):
    """The previous results with the scenarios in `ran` replaced by this run's."""
    if old.get("mode") != new["mode"]:
        return new
    merged = dict(old)
    runs = dict(old.get("scenario_runs") or {})
    for k in ("density", "fanout", "ingest", "durable", "slow", "jitter"):
        if k in old and k not in runs:
            # Results from before per-scenario stamps: they came from the old full run.
            runs[k] = {"date": old["machine"]["date"], "tidegate": old["machine"].get("tidegate"),
                       "wall_secs": old.get("wall_secs")}
    for k in ran:
        if k in new:
            merged[k] = new[k]
        runs[k] = new["scenario_runs"][k]
    merged["scenario_runs"] = runs
    merged["config"] = {**old.get("config", {}), **new["config"]}
    merged["errors"] = [e for e in old.get("errors", []) if e.split(" ")[0].rstrip(":") not in ran] + \
        new.get("errors", [])
    merged["last_partial_run"] = {"only": ran, "date": new["machine"]["date"], "machine": new["machine"]}
    return merged


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", default="", help="comma list: density,fanout,ingest,durable,slow,jitter; "
                    "merges into the existing results file")
    ap.add_argument("--peers", default="", help="override: comma list of peers (pushpin,nchan) or 'none'")
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    mode = "smoke" if a.smoke else "full"
    cfg = CONFIGS[mode]
    scenarios = ["density", "fanout", "ingest", "durable", "slow", "jitter"]
    only = set(a.only.split(",")) if a.only else set(scenarios)
    if only - set(scenarios):
        ap.error(f"unknown scenario(s): {', '.join(sorted(only - set(scenarios)))}")
    peers = ["pushpin", "nchan"] if cfg["peers"] else []
    if a.peers:
        peers = [] if a.peers == "none" else a.peers.split(",")
    peers = [p for p in peers if shutil.which({"pushpin": "pushpin", "nchan": "nginx"}[p])]
    res = {"mode": mode, "config": cfg, "machine": machine(), "peers": peers}
    t0 = time.time()
    steal = {}
    try:
        res["errors"] = []

        def guard(name, f, *a):
            scenario = name.split(" ")[0]
            t0 = cpu_ticks()
            try:
                return f(*a)
            except Exception as e:  # one failed scenario must not lose the others
                log(f"{name} failed: {e!r}")
                res["errors"].append(f"{name}: {e!r}")
                return None
            finally:
                acc = steal.setdefault(scenario, [0, 0])
                t1 = cpu_ticks()
                acc[0] += t1[0] - t0[0]
                acc[1] += t1[1] - t0[1]
        if "density" in only:
            res["density"] = [d for t in ["tidegate"] + peers for tr in ("sse", "ws")
                              for d in [guard(f"density {t} {tr}", density, cfg, t, tr)] if d]
        if "fanout" in only:
            res["fanout"] = [row for t in ["tidegate"] + peers
                             for row in (guard(f"fanout {t}", fanout, cfg, t) or [])]
        if "ingest" in only:
            res["ingest"] = guard("ingest", ingest, cfg)
        if "durable" in only:
            res["durable"] = guard("durable", durable, cfg)
        if "slow" in only:
            res["slow"] = guard("slow", slow_client, cfg)
        if "jitter" in only:
            res["jitter"] = guard("jitter", jitter, cfg)
    finally:
        for p in list(STARTED):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        shutil.rmtree(WORK, ignore_errors=True)
    res["wall_secs"] = time.time() - t0
    ran = [k for k in scenarios if k in only]
    stamp = {"date": res["machine"]["date"], "tidegate": res["machine"]["tidegate"],
             "wall_secs": res["wall_secs"], "loadavg_after": list(os.getloadavg())}
    res["scenario_runs"] = {k: {**stamp, "steal_pct": round(100 * steal[k][0] / max(steal[k][1], 1), 1)}
                            if k in steal else stamp for k in ran}
    out = a.results or os.path.join(ROOT, "bench", "results", f"{mode}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if a.only and os.path.exists(out):
        res = merge_results(json.load(open(out)), res, ran)
    json.dump(res, open(out, "w"), indent=1)
    log(f"results in {out} ({res['wall_secs']:.0f} s)")


if __name__ == "__main__":
    main()
