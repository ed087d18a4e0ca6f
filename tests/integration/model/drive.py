#!/usr/bin/env python3
"""Drive a running flowlogd with seeded random appends and compare everything with model.py.

Run by contract-model.sh (make check), which starts a fresh flowlogd per seed with the tokens
file this script writes (--write-tokens), and turns this script's output into TAP checks:

    drive.py --write-tokens FILE
    drive.py --server HOST:PORT --flowlog CLI [--flowlog-libpath DIR] --work DIR
             (--seed N [--steps N] | --probe) [--samples N]

Every append goes through the flowlog CLI (single events, --batch, pipelined lines of three
tenants at once, rollback); each outcome (seq, duplicate, ts order, error code, index, the
conflicting version) is compared with the model's prediction, and the model then takes the
server's acknowledged seq and ts.  Afterwards: state as of every seq of every flow (over the
wire, msgwire.py), and through the CLI state (now, sampled as-of seqs, as-of times), history,
log (all, --from, --type, --flow, --run), timeline, table (whole, --where values), and four
log --follow subscribers started before the first append.

Output: unnumbered TAP for lib.sh's tap_from ("ok - ...", "not ok - ...", "# ..."); the first
discrepancies of a failed check follow it as '# ' lines with a command that reproduces the read
or the append ($S = the server's address).  Everything found is in WORK/report.json.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # the source tree may be read-only (make distcheck)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import msgwire  # noqa: E402

# Tenants: name -> (token, --tenant for an operator token or None).  The tokens file holds these
# and the writer/reader tokens of acme (role checks) and the probes' tenants.
TENANTS = {"acme": ("tok-a", None), "beta": ("tok-b", None), "gamma": ("tok-op", "gamma")}
PROBE_TENANTS = {"acme:eng": ("tok-c", None), "acm": ("tok-d", None)}
TOKENS = ("tok-a acme admin\ntok-b beta admin\ntok-op * admin\n"
          "tok-w acme writer\ntok-r acme reader\ntok-c acme:eng admin\ntok-d acm admin\n")
FLOWS = ["f1", "f2", "Flow-B", "shared", "zz-9", "f.never"]
ARTS = ["nb_a.py", "nb_b.py", "Nb_c.py", "z.py", "\u00e9.py", "a b.py"]
STEPS = ["parse_xml", "generate_code", "validate", "fix_errors"]
JOB_RUN_IDS = ["jr-1", "jr-2", "jr-3"]
FINDINGS_OK = ['{"findings": []}', ' [1, 2] ', '1e400', '{"a":1,"a":2}', '"x"', 'null', 'true',
               '{"n": 123456789012345678901234567890}']
FINDINGS_BAD = ['{', 'NaN', '[1,]', '{} x', '', "{'a':1}", '/*c*/1']
CLI_TIMEOUT = 300        # seconds for one CLI command: only a hang reaches it
FOLLOW_TIMEOUT = 300     # seconds for the subscribers to catch up with the last append


def say(*a):
    print(*a, flush=True)


def sh_quote(a):
    if a and all(c.isalnum() or c in "-_.,/=:@+%" for c in a):
        return a
    return "'" + a.replace("'", "'\\''") + "'"


class Driver:
    def __init__(self, args):
        self.seed = args.seed if args.seed is not None else 0
        self.rng = random.Random(self.seed)
        self.steps = args.steps
        self.samples = args.samples
        self.work = args.work
        os.makedirs(self.work, exist_ok=True)
        self.server = args.server
        self.cli_base = [args.flowlog]
        self.env = dict(os.environ)
        if args.flowlog_libpath:
            lp = self.env.get("LD_LIBRARY_PATH")
            self.env["LD_LIBRARY_PATH"] = args.flowlog_libpath + (":" + lp if lp else "")
        self.tenants = dict(TENANTS)
        self.flows = list(FLOWS)
        self.m = M.Model(json.loads(os.environ.get("MODEL_OPTS", "{}")))
        self.disc = []
        self.counts = {}
        self.sent = {t: [] for t in list(TENANTS) + list(PROBE_TENANTS)}  # events with event_id
        self.nrun = 0
        self.nev = 0
        self.naps = 0          # long pauses taken (spreading ts), see run()
        self.tainted = set()
        self.followers = []

    # ---------------------------------------------------------------- infra
    def cli(self, tenant, args, stdin=None, token=None):
        tok, ten = self.tenants[tenant]
        if token:
            tok = token
        cmd = self.cli_base + ["--server", self.server, "--token", tok, "--json"]
        if ten and not token:
            cmd += ["--tenant", ten]
        cmd += args
        try:
            p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env,
                               timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            return 124, [{"_timeout": "no answer in %d s" % CLI_TIMEOUT}], ""
        out = []
        for ln in p.stdout.splitlines():
            if ln.strip():
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    out.append({"_unparsed": ln})
        return p.returncode, out, p.stderr

    def cmdline(self, tenant, args, token=None):
        tok, ten = self.tenants[tenant]
        s = "flowlog --server $S --token %s --json" % (token or tok)
        if ten and not token:
            s += " --tenant " + ten
        return s + " " + " ".join(sh_quote(a) for a in args)

    def bump(self, k, n=1):
        self.counts[k] = self.counts.get(k, 0) + n

    def report(self, kind, detail, repro=None):
        self.disc.append({"kind": kind, "detail": detail, "repro": repro})

    # ---------------------------------------------------------------- generation
    def T(self, tenant):
        return self.m.tenant(tenant)

    def runs(self, tenant):
        T = self.T(tenant)
        return [(rid, fid, r) for fid, p in T.flows.items() for rid, r in p["runs"].items()]

    def pick_run(self, tenant):
        rng = self.rng
        T = self.T(tenant)
        runs = self.runs(tenant)
        x = rng.random()
        if runs and x < 0.85:
            live = [r for r in runs if r[2]["status"] not in M.TERMINAL]
            if live and rng.random() < 0.75:
                return rng.choice(live)[0]
            return rng.choice(runs)[0]
        gone = [r for r in T.run_owner if r not in {x[0] for x in runs}]
        if gone and x < 0.95:
            return rng.choice(gone)
        return "nope-%d" % rng.randrange(5)

    def opt(self, d, k, v, p=0.5):
        if self.rng.random() < p:
            d[k] = v

    def text(self):
        return self.rng.choice(["", "some text", "x" * 10, "\u00fcml\u00e4ut \u2713", "line\nbreak",
                                "t%d" % self.rng.randrange(100), "nul\u0000inside", "\U0001F600 emoji",
                                "tab\tquote\"back\\slash", "\u0000"])

    def gen_event(self, tenant):
        rng = self.rng
        T = self.T(tenant)
        flows = list(T.flows)
        runs = self.runs(tenant)
        weights = {"flow_registered": 4 if len(flows) < 4 else 1, "flow_updated": 3, "flow_status": 2,
                   "run_started": 8 if len(runs) < 3 else 5, "run_status": 12, "iteration_step": 12,
                   "patch": 8, "scan_verdict": 8, "exec_result": 6, "human_request": 4,
                   "human_resolution": 5, "flow_rollback": 4}
        if not flows:
            t = "flow_registered"
        else:
            t = rng.choices(list(weights), list(weights.values()))[0]
        d = {}
        if t == "flow_registered":
            unreg = [f for f in FLOWS if f not in T.flows and f != "f.never"]
            fid = rng.choice(unreg) if unreg and rng.random() < 0.85 else rng.choice(FLOWS[:5])
            d["flow_id"] = fid
            d["flow_name"] = rng.choice(["orders.xml", "billing.xml", "x.xml", ""])
            self.opt(d, "server", rng.choice(["prod", "dev"]))
            self.opt(d, "nifi_xml_path", "/Volumes/x/%s.xml" % fid)
            self.opt(d, "description", self.text())
            self.opt(d, "priority", rng.choice(["P0", "P1", "P2"]))
            self.opt(d, "owner", rng.choice(["team-a", "team-b"]))
        elif t in ("flow_updated", "flow_status", "flow_rollback"):
            fid = rng.choice(flows) if rng.random() < 0.93 else rng.choice(FLOWS)
            d["flow_id"] = fid
            if t == "flow_updated":
                self.opt(d, "flow_name", rng.choice(["orders.xml", "billing.xml", "renamed.xml"]), 0.4)
                self.opt(d, "server", rng.choice(["prod", "dev", ""]), 0.3)
                self.opt(d, "nifi_xml_path", "/p/" + fid, 0.3)
                self.opt(d, "description", self.text(), 0.3)
                self.opt(d, "priority", rng.choice(["P0", "P1", "P2"]), 0.3)
                self.opt(d, "owner", rng.choice(["team-a", "team-c"]), 0.3)
            elif t == "flow_status":
                d["migration_status"] = rng.choice(M.FLOW_STATUSES)
            else:
                p = T.flows.get(fid)
                head = self.m.head()
                reg = p["reg_seq"] if p else 1
                x = rng.random()
                if x < 0.8 or not p:
                    to = rng.randint(reg, max(reg, head))
                elif x < 0.9 and reg > 1:
                    to = rng.randint(1, reg - 1)
                else:
                    to = head + rng.randint(1, 4)
                d["to_seq"] = to
                d["reason"] = rng.choice(["bad patch", "", "retry from scratch"])
        elif t == "run_started":
            fid = rng.choice(flows) if rng.random() < 0.92 else rng.choice(FLOWS)
            others = [r for t2 in TENANTS if t2 != tenant for r in self.T(t2).run_owner
                      if r not in T.run_owner]
            if T.run_owner and rng.random() < 0.08:
                rid = rng.choice(list(T.run_owner))
            elif others and rng.random() < 0.05:
                rid = rng.choice(others)
                self.bump("gen_cross_tenant_run_id")
            else:
                self.nrun += 1
                rid = "%s_run_%s%d" % (fid, rng.choice(["a", "B", "z", "0", ""]), self.nrun)
            d = {"run_id": rid, "flow_id": fid}
            self.opt(d, "job_id", "job-%d" % rng.randrange(50), 0.5)
            self.opt(d, "job_run_id", rng.choice(JOB_RUN_IDS), 0.5)
            self.opt(d, "status", rng.choice(["CREATING", "QUEUED", "RUNNING"]), 0.5)
            self.opt(d, "triggered_by", rng.choice(["alice", "scheduler", ""]), 0.4)
        else:
            rid = self.pick_run(tenant)
            d["run_id"] = rid
            if t != "run_status":
                p = T.flows.get(T.run_owner.get(rid)) if rid in T.run_owner else None
                nums = [1, 1, 2, 2, 3, 10, 2 ** 31 - 1]
                if t == "human_resolution" and p and rng.random() < 0.7:
                    ks = [k[1] for k in p["human"] if k[0] == rid]
                    if ks:
                        nums = ks
                d["iteration_num"] = rng.choice(nums)
            if t == "run_status":
                d["status"] = rng.choices(M.RUN_STATUSES, [5, 10, 35, 20, 15, 15])[0]
                self.opt(d, "job_id", "job-%d" % rng.randrange(50), 0.2)
                self.opt(d, "job_run_id", rng.choice(JOB_RUN_IDS), 0.3)
                self.opt(d, "status_message", self.text(), 0.4)
                self.opt(d, "error_message", self.text(), 0.3)
                self.opt(d, "progress_percentage", rng.choice([0, 1, 50, 99, 100]), 0.4)
                self.opt(d, "validation_percentage", rng.choice([0, 33, 100]), 0.3)
                if d["status"] in M.TERMINAL:
                    self.opt(d, "flow_status", rng.choice(M.FLOW_STATUSES), 0.25)
            elif t == "iteration_step":
                d["step"] = rng.choice(STEPS)
                d["step_status"] = rng.choices(["RUNNING", "COMPLETED", "FAILED"], [6, 3, 1])[0]
                self.opt(d, "summary", self.text(), 0.4)
                self.opt(d, "error", self.text(), 0.2)
            elif t == "patch":
                d["artifact_ref"] = rng.choice(ARTS)
                self.opt(d, "patch_summary", self.text(), 0.5)
                self.opt(d, "diff_ref", "git:%x" % rng.randrange(1 << 20), 0.5)
            elif t == "scan_verdict":
                d["artifact_ref"] = rng.choice(ARTS)
                d["scan_status"] = rng.choices(["PENDING", "SCANNING", "PASSED", "BLOCKED"], [3, 3, 2, 1])[0]
                self.opt(d, "findings_json", rng.choice(FINDINGS_OK), 0.6)
            elif t == "exec_result":
                d["job_type"] = rng.choice(["flow_job", "validation_job"])
                d["status"] = rng.choice(["SUCCESS", "FAILED", "TIMEOUT"])
                self.opt(d, "runtime_s", rng.choice([0, 1, 42, 3600]), 0.6)
                self.opt(d, "error", self.text(), 0.3)
                self.opt(d, "logs_ref", "/logs/%d" % rng.randrange(100), 0.4)
            elif t == "human_request":
                d["reason"] = rng.choice(["sast_blocked", "validation_failed", "manual_review"])
                self.opt(d, "instructions", self.text(), 0.5)
            elif t == "human_resolution":
                d["status"] = rng.choice(["RESOLVED", "IGNORED"])
        # shuffle data key order sometimes (data must come back as appended)
        if rng.random() < 0.2:
            items = list(d.items())
            rng.shuffle(items)
            d = dict(items)
        ev = {"type": t, "data": d}
        if rng.random() < 0.6:
            self.nev += 1
            ev["event_id"] = rng.choice(["ev-%s-%d" % (tenant, self.nev), "ev-%d" % self.nev])
        return ev

    def flow_of(self, tenant, ev):
        T = self.T(tenant)
        d = ev.get("data", {})
        if isinstance(d, dict):
            if ev.get("type") in M.RUN_LEVEL:
                return T.run_owner.get(d.get("run_id"))
            return d.get("flow_id")
        return None

    def mutate_invalid(self, ev):
        rng = self.rng
        ev = json.loads(json.dumps(ev))
        d = ev["data"]
        t = ev["type"]
        schema = M.SCHEMA[t]
        choices = ["unknown_data", "unknown_top", "drop_required", "null_required", "bad_enum",
                   "wrong_type", "float_int", "bool_int", "long_id", "empty_id", "bad_type",
                   "long_event_id", "neg_ev", "data_not_obj", "empty_event_id"]
        if t == "iteration_step":
            choices += ["empty_step", "long_step", "iter0"] * 2
        if t == "run_status":
            choices += ["pct101", "fs_nonterminal"] * 2
        if t == "exec_result":
            choices += ["runtime_neg"] * 2
        if t == "scan_verdict":
            choices += ["bad_findings"] * 3
        c = rng.choice(choices)
        req = [f for f, k, r in schema if r]
        strs = [f for f, k, r in schema if k[0] in ("id", "text", "enum", "step", "json") and f in d]
        ints = [f for f, k, r in schema if k[0] == "int" and f in d]
        ids = [f for f, k, r in schema if k[0] == "id" and f in d]
        enums = [f for f, k, r in schema if k[0] == "enum" and f in d]
        if c == "unknown_data":
            d["bogus"] = 1
        elif c == "unknown_top":
            ev["extra"] = True
        elif c == "drop_required":
            d.pop(rng.choice(req), None)
        elif c == "null_required":
            d[rng.choice(req)] = None
        elif c == "bad_enum" and enums:
            d[rng.choice(enums)] = "bogus"
        elif c == "wrong_type" and strs:
            d[rng.choice(strs)] = 5
        elif c == "float_int" and ints:
            d[rng.choice(ints)] = float(d[ints[0]]) if ints else 1.0
        elif c == "bool_int" and ints:
            d[rng.choice(ints)] = True
        elif c == "long_id" and ids:
            d[rng.choice(ids)] = "x" * 257
        elif c == "empty_id" and ids:
            d[rng.choice(ids)] = ""
        elif c == "bad_type":
            ev["type"] = "run_exploded"
        elif c == "long_event_id":
            ev["event_id"] = "e" * 129
        elif c == "empty_event_id":
            ev["event_id"] = ""
        elif c == "neg_ev":
            ev["expected_version"] = -1
        elif c == "data_not_obj":
            ev["data"] = [1]
        elif c == "empty_step":
            d["step"] = ""
        elif c == "long_step":
            d["step"] = "s" * 65
        elif c == "iter0":
            d["iteration_num"] = rng.choice([0, -1, 2 ** 31])
        elif c == "pct101":
            d[rng.choice(["progress_percentage", "validation_percentage"])] = rng.choice([101, -1])
        elif c == "fs_nonterminal":
            d["status"] = rng.choice(["CREATING", "QUEUED", "RUNNING"])
            d["flow_status"] = "DONE"
        elif c == "runtime_neg":
            d["runtime_s"] = -1
        elif c == "bad_findings":
            d["findings_json"] = rng.choice(FINDINGS_BAD)
        else:
            d["bogus2"] = "x"
        self.bump("gen_invalid_" + c)
        return ev

    def gen_valid_edge(self, ev):
        """valid boundary values"""
        rng = self.rng
        ev = json.loads(json.dumps(ev))
        d = ev["data"]
        x = rng.random()
        if "event_id" in ev and x < 0.3:
            self.nev += 1
            ev["event_id"] = ("E%d-" % self.nev).ljust(128, "q")
        elif ev["type"] == "iteration_step" and x < 0.6:
            d["step"] = ("st%d" % rng.randrange(3)).ljust(64, "-")
        elif x < 0.7:
            ids = [f for f, k, r in M.SCHEMA[ev["type"]] if k[0] == "id" and f in d
                   and f not in ("flow_id", "run_id")]
            if ids:
                f = rng.choice(ids)
                d[f] = rng.choice(["a" * 256, "\u00e9" * 128, "x\u0000y", "id\U0001F600"])
                self.bump("gen_edge_id")
        elif x < 0.8:
            for f, k, r in M.SCHEMA[ev["type"]]:
                if not r and f not in d:
                    d[f] = None      # explicit null == absent
                    break
        return ev

    def dup_of(self, tenant):
        """A retry of an earlier event (same, reordered, explicit nulls, or changed)."""
        rng = self.rng
        pool = self.sent[tenant]
        if not pool:
            return None
        orig = rng.choice(pool)
        ev = json.loads(json.dumps(orig))
        x = rng.random()
        if x < 0.35:
            kind = "same"
        elif x < 0.5:
            items = list(ev["data"].items())
            rng.shuffle(items)
            ev["data"] = dict(items)
            kind = "reordered"
        elif x < 0.6:
            for f, k, r in M.SCHEMA[ev["type"]]:
                if not r and f not in ev["data"]:
                    ev["data"][f] = None
                    break
            kind = "nulls"
        elif x < 0.7:
            ev["expected_version"] = rng.randrange(0, 50)
            kind = "other_expected_version"
        elif x < 0.9:
            changed = False
            for f, k, r in M.SCHEMA[ev["type"]]:
                if k[0] == "text" and not r:
                    ev["data"][f] = "changed %d" % rng.randrange(1000)
                    changed = True
                    break
            if not changed:
                # the original may lack its first field (a malformed event sent again)
                f0 = M.SCHEMA[ev["type"]][0][0]
                v0 = ev["data"].get(f0)
                ev["data"][f0] = v0 + "-x" if isinstance(v0, str) else "x"
            kind = "changed_data"
        else:
            ev["type"] = "flow_status" if ev["type"] != "flow_status" else "flow_updated"
            kind = "changed_type"
        self.bump("gen_dup_" + kind)
        return ev

    def add_expected_version(self, tenant, ev, offset):
        rng = self.rng
        x = rng.random()
        if x < 0.12:
            fid = self.flow_of(tenant, ev)
            v = self.T(tenant).versions.get(fid, 0) if fid else 0
            ev["expected_version"] = v + offset.get(fid, 0)
            self.bump("gen_ev_right")
        elif x < 0.17:
            fid = self.flow_of(tenant, ev)
            v = self.T(tenant).versions.get(fid, 0) if fid else 0
            ev["expected_version"] = max(0, v + rng.choice([-2, -1, 1, 3]))
            self.bump("gen_ev_wrong")

    def one(self, tenant, offset, clean=False):
        rng = self.rng
        if clean and rng.random() < 0.06:
            ev = self.dup_of(tenant)
            if ev is not None and self.m.predict(tenant, [ev])[0] == "ok":
                return ev
        if clean:
            for _ in range(10):
                ev = self.gen_event(tenant)
                if rng.random() < 0.08:
                    ev = self.gen_valid_edge(ev)
                if self.m.predict(tenant, [ev])[0] == "ok":
                    break
            if rng.random() < 0.1:
                fid = self.flow_of(tenant, ev)
                ev["expected_version"] = self.T(tenant).versions.get(fid, 0) + offset.get(fid, 0)
                self.bump("gen_ev_right")
            fid = self.flow_of(tenant, ev)
            offset[fid] = offset.get(fid, 0) + 1
            self.bump("gen_clean")
            return ev
        x = rng.random()
        if x < 0.02:
            ev = self.dup_of(tenant)
            if ev is not None:
                ev = self.mutate_invalid(ev)    # a retry whose form is wrong: bad_request first
                self.bump("gen_dup_invalid_form")
            else:
                ev = self.gen_event(tenant)
        elif x < 0.14:
            ev = self.dup_of(tenant) or self.gen_event(tenant)
        else:
            ev = self.gen_event(tenant)
            y = rng.random()
            if y < 0.06:
                ev = self.mutate_invalid(ev)
            elif y < 0.12:
                ev = self.gen_valid_edge(ev)
        if rng.random() < 0.03 and self.sent:
            # an event_id used in another tenant: must be independent here
            other = rng.choice([t for t in TENANTS if t != tenant])
            if self.sent[other]:
                ev["event_id"] = rng.choice(self.sent[other]).get("event_id")
                self.bump("gen_cross_tenant_event_id")
        if "expected_version" not in ev:
            self.add_expected_version(tenant, ev, offset)
        fid = self.flow_of(tenant, ev)
        offset[fid] = offset.get(fid, 0) + 1
        return ev

    # ---------------------------------------------------------------- execution
    def do_append(self, tenant, events, batch, token=None, role="admin", via_rollback_cmd=False):
        if via_rollback_cmd:
            d = events[0]["data"]
            events[0]["data"] = {"flow_id": d["flow_id"], "to_seq": d["to_seq"], "reason": d["reason"]}
        lines = "".join(json.dumps(e) + "\n" for e in events)
        exp = self.m.predict(tenant, events, role=role)
        if via_rollback_cmd:
            e = events[0]
            args = ["rollback", e["data"]["flow_id"], "--to-seq", str(e["data"]["to_seq"]),
                    "--reason", e["data"]["reason"]]
            if e.get("event_id"):
                args += ["--event-id", e["event_id"]]
            rc, out, err = self.cli(tenant, args, token=token)
            repro = self.cmdline(tenant, args, token=token)
        else:
            args = ["append"] + (["--batch"] if batch else [])
            rc, out, err = self.cli(tenant, args, stdin=lines, token=token)
            repro = "printf '%%s\\n' %s | %s" % (
                " ".join("'" + json.dumps(e).replace("'", "'\\''") + "'" for e in events),
                self.cmdline(tenant, args, token=token))
        self.bump("appends_batch" if batch else "appends_single")
        if via_rollback_cmd:
            self.bump("via_rollback_cmd")
        self.bump("events_sent", len(events))
        for e in events:
            if isinstance(e, dict) and e.get("event_id") and isinstance(e.get("data"), dict) \
                    and e.get("type") in M.SCHEMA:
                self.sent[tenant].append(e)
        got_err = [o for o in out if "error" in o]
        ok_lines = [o for o in out if "seq" in o]
        ctx = {"tenant": tenant, "head_before": self.m.head(), "events": events, "batch": batch,
               "server_out": out, "expected": None}
        if exp[0] == "ok":
            results = exp[1]
            ctx["expected"] = [list(r) for r in results]
            if got_err or len(ok_lines) != len(events) or rc != 0:
                ctx["stderr"] = err
                self.report("append_outcome", ctx, repro)
                self.resync(tenant, events, out)
                return
            tss = []
            bad = False
            for r, o in zip(results, ok_lines):
                if r[0] == "new":
                    if o.get("seq") != r[1] or o.get("duplicate") is not False:
                        bad = True
                    tss.append(M.parse_ts(o["ts"]))
                else:
                    if (o.get("seq") != r[1] or o.get("duplicate") is not True
                            or (r[2] is not None and M.parse_ts(o["ts"]) != r[2])):
                        bad = True
                    tss.append(None)
            if bad:
                self.report("append_result", ctx, repro)
            last = self.m.log[-1]["ts"] if self.m.log else 0
            for x in tss:
                if x is not None:
                    if x < last:
                        self.report("ts_decreasing", {"prev": last, "ts": x, "out": out}, repro)
                    last = x
            ok = self.m.commit(tenant, events, tss, role=role)
            assert ok
            # ts must not decrease
            self.bump("appends_ok_match" if not bad else "appends_ok_mismatch")
            for r, e in zip(results, events):
                self.bump("result_" + r[0])
                if r[0] == "new":
                    self.bump("committed_" + e["type"])
        else:
            code, idx, ver, field = exp[1:]
            ctx["expected"] = {"code": code, "index": idx, "version": ver, "field": field}
            if batch or via_rollback_cmd:
                want_idx = idx
            else:
                want_idx = 0 if idx is not None else None
            if via_rollback_cmd:
                want_idx = None  # CLI rollback sends one event; index may be 0 or null
            if len(events) > 1 and not batch:
                raise AssertionError("non-batch multi-event not used")
            e0 = got_err[0]["error"] if got_err else None
            match = (e0 is not None and not ok_lines and e0.get("code") == code and rc != 0
                     and (via_rollback_cmd or e0.get("index") == want_idx)
                     and (code != "conflict" or e0.get("version") == ver))
            if not match:
                self.report("append_outcome", ctx, repro)
                if ok_lines and not got_err:
                    self.resync(tenant, events, out)
                return
            if code == "bad_request" and field and field.split(".")[-1] not in e0.get("message", ""):
                self.report("message_field", {"expected_field": field, "message": e0.get("message"),
                                              "event": events[idx]}, repro)
            self.bump("appends_err_match")
            self.bump("err_" + code)

    def resync(self, tenant, events, out):
        """The server committed something the model refused (or vice versa): keep seqs aligned."""
        ok_lines = [o for o in out if "seq" in o and not o.get("duplicate")]
        for o, e in zip(ok_lines, events):
            if o["seq"] == self.m.head() + 1:
                fid = self.flow_of(tenant, e) if isinstance(e, dict) else None
                self.m.log.append({"seq": o["seq"], "ts": M.parse_ts(o["ts"]), "tenant": tenant,
                                   "type": e.get("type"), "event_id": e.get("event_id"),
                                   "data": e.get("data"), "flow_id": fid,
                                   "run_id": (e.get("data") or {}).get("run_id")})
                self.tainted.add((tenant, fid))
                if fid is not None:
                    self.m.streams.setdefault((tenant, fid), []).append(o["seq"])

    def specials(self):
        """Boundary cases, through the same model/compare path."""
        rng = self.rng
        T = self.T("acme")
        flows = list(T.flows)
        runs = [r for r in self.runs("acme") if r[2]["status"] not in M.TERMINAL]
        if flows:
            f = rng.choice(flows)
            self.nrun += 1
            evs = [{"type": "run_started", "data": {"flow_id": f, "run_id": "bulk-%d-%02d" % (self.nrun, i)}}
                   for i in range(24)]
            self.do_append("acme", evs, True)
            self.bump("special_bulk_runs")
            evs = [{"type": "flow_updated", "data": {"flow_id": f}}] * 1001
            self.do_append("acme", evs, True)
            self.bump("special_1001")
            for n in (65536, 65537):
                self.do_append("acme", [{"type": "flow_updated", "data": {"flow_id": f, "description": "d" * n}}], False)
            self.do_append("acme", [{"type": "flow_updated", "data": {"flow_id": f, "owner": "\u00e9" * 32768}}], False)
            self.do_append("acme", [{"type": "flow_updated", "data": {"flow_id": f, "owner": "\u00e9" * 32769}}], False)
        runs = [r for r in self.runs("acme") if r[2]["status"] not in M.TERMINAL]
        if runs:
            rid = rng.choice(runs)[0]
            for st in ("\u00e9" * 32, "\u00e9" * 33, "s" * 64):
                self.do_append("acme", [{"type": "iteration_step", "data": {
                    "run_id": rid, "iteration_num": 77, "step": st, "step_status": "RUNNING"}}], False)
            big = '"' + "a" * (1048576 - 2) + '"'
            self.do_append("acme", [{"type": "scan_verdict", "data": {
                "run_id": rid, "iteration_num": 78, "artifact_ref": "big", "scan_status": "PENDING",
                "findings_json": big}}], False)
            self.bump("special_big_event")
            self.do_append("acme", [{"type": "scan_verdict", "data": {
                "run_id": rid, "iteration_num": 78, "artifact_ref": "big2", "scan_status": "PENDING",
                "findings_json": "[" + "1," * 40000 + "1]"}}], False)

    FOLLOWS = (("acme", []), ("beta", ["--flow", "shared"]), ("gamma", ["--type", "run_status"]),
               ("acme", ["--run", "nope-1"]))

    def start_followers(self):
        """log --follow subscribers, started before the first append: a subscription starts at
        seq 1 (as log), so when it gets going does not matter."""
        self.followers = []
        for tenant, args in self.FOLLOWS:
            tok, ten = self.tenants[tenant]
            cmd = self.cli_base + ["--server", self.server, "--token", tok, "--json"]
            if ten:
                cmd += ["--tenant", ten]
            cmd += ["log", "--follow"] + args
            fn = os.path.join(self.work, "follow_%d.out" % len(self.followers))
            with open(fn, "w") as f:
                p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=self.env)
            self.followers.append((tenant, args, p, fn))

    @staticmethod
    def read_lines(fn):
        out = []
        with open(fn, errors="replace") as f:
            for ln in f:
                if not ln.endswith("\n"):
                    break           # a line still being written
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    out.append({"_unparsed": ln})
        return out

    def check_followers(self):
        """Wait (up to FOLLOW_TIMEOUT s, polling) until each subscriber has printed as many
        events as the model expects or has exited, then stop it and compare."""
        for tenant, args, p, fn in self.followers:
            kw = {}
            if args[:1] == ["--flow"]:
                kw["flow"] = args[1]
            if args[:1] == ["--type"]:
                kw["type_"] = args[1]
            if args[:1] == ["--run"]:
                kw["run"] = args[1]
            exp = self.m.events(tenant, **kw)
            end = time.monotonic() + FOLLOW_TIMEOUT
            while (len(self.read_lines(fn)) < len(exp) and p.poll() is None
                   and time.monotonic() < end):
                time.sleep(0.05)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            out = self.read_lines(fn)
            self.cmp_list("follow", tenant, ["log", "--follow"] + args, 0, out, exp)

    def stop_followers(self):
        for _, _, p, _ in self.followers:
            if p.poll() is None:
                p.kill()
                p.wait()

    def concurrent_round(self):
        """3 tenants at once, each a pipelined multi-line (non-batch) append: the server may
        group-commit lines of several connections together.  Outcomes are checked line by line,
        the lines merged in the order of the seqs the server gave."""
        rng = self.rng
        procs = []
        for tenant in TENANTS:
            offset = {}
            evs = [self.one(tenant, offset, clean=rng.random() < 0.7) for _ in range(rng.randint(3, 25))]
            for e in evs:
                if isinstance(e.get("data"), dict) and e.get("type") == "flow_rollback" \
                        and isinstance(e["data"].get("to_seq"), int) and e["data"]["to_seq"] > self.m.head():
                    e["data"]["to_seq"] = self.m.head() + 100000   # surely beyond, whatever the interleaving
            tok, ten = self.tenants[tenant]
            cmd = self.cli_base + ["--server", self.server, "--token", tok, "--json"]
            if ten:
                cmd += ["--tenant", ten]
            cmd += ["append"]
            stdin = "".join(json.dumps(e) + "\n" for e in evs)
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=self.env)
            procs.append((tenant, evs, p, stdin))
        # feed all stdins at once (the three run concurrently), then collect
        res = {}

        def run1(tenant, p, stdin):
            try:
                res[tenant] = p.communicate(stdin, timeout=CLI_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                res[tenant] = p.communicate()
        th = [threading.Thread(target=run1, args=(t, p, si)) for t, e, p, si in procs]
        for x in th:
            x.start()
        for x in th:
            x.join()
        queues = {}
        for tenant, evs, p, stdin in procs:
            out = [json.loads(l) for l in res[tenant][0].splitlines() if l.strip()]
            if len(out) != len(evs):
                self.report("pipelined_output", {"tenant": tenant, "n_events": len(evs), "out": out}, None)
                self.counts["pipelined_broken"] = 1
                return False
            queues[tenant] = [(i, e, o) for i, (e, o) in enumerate(zip(evs, out))]
            self.bump("pipelined_lines", len(evs))
        while any(queues.values()):
            progressed = True
            while progressed:
                progressed = False
                for t, q in queues.items():
                    while q and not (("seq" in q[0][2]) and not q[0][2].get("duplicate")):
                        i, e, o = q.pop(0)
                        self.check_line(t, i, e, o)
                        progressed = True
            cands = [(q[0][2]["seq"], t) for t, q in queues.items() if q]
            if not cands:
                break
            _, t = min(cands)
            i, e, o = queues[t].pop(0)
            self.check_line(t, i, e, o)
        self.bump("concurrent_rounds")
        return True

    def check_line(self, tenant, i, ev, o):
        exp = self.m.predict(tenant, [ev])
        repro = "(line %d of a pipelined append) printf '%%s\\n' '%s' | %s" % (
            i, json.dumps(ev), self.cmdline(tenant, ["append"]))
        ctx = {"tenant": tenant, "line": i, "event": ev, "server": o, "expected": exp,
               "head_before": self.m.head()}
        if exp[0] == "ok":
            r = exp[1][0]
            if "seq" not in o:
                self.report("append_outcome", ctx, repro)
                return
            if r[0] == "new":
                good = o["seq"] == r[1] and o.get("duplicate") is False
                tss = [M.parse_ts(o["ts"])]
                if self.m.log and tss[0] < self.m.log[-1]["ts"]:
                    self.report("ts_decreasing", ctx, repro)
            else:
                good = o["seq"] == r[1] and o.get("duplicate") is True and M.parse_ts(o["ts"]) == r[2]
                tss = [None]
            if not good:
                self.report("append_result", ctx, repro)
            self.m.commit(tenant, [ev], tss)
            self.bump("pipelined_ok_match" if good else "pipelined_ok_mismatch")
            if r[0] == "new":
                self.bump("committed_" + ev["type"])
            else:
                self.bump("pipelined_dup")
        else:
            code, idx, ver, field = exp[1:]
            e0 = o.get("error")
            if not (e0 and e0.get("code") == code and e0.get("index") == i
                    and (code != "conflict" or e0.get("version") == ver)):
                self.report("append_outcome", ctx, repro)
                if "seq" in o and not o.get("duplicate"):
                    self.resync(tenant, [ev], [o])
                return
            self.bump("pipelined_err_match")

    def run(self):
        rng = self.rng
        special_at = rng.randint(self.steps // 3, 2 * self.steps // 3)
        tenants = list(TENANTS)
        step = 0
        while step < self.steps:
            if special_at is not None and step >= special_at:
                special_at = None
                self.specials()
            tenant = rng.choices(tenants, [5, 3, 2])[0]
            if self.m.head() > 0 and (rng.random() < 0.03 or (
                    step >= self.steps * 3 // 4 and not self.counts.get("concurrent_rounds"))):
                self.concurrent_round()
                step += 20
                continue
            x = rng.random()
            if x < 0.02 and tenant == "acme":
                # role checks
                evs = [self.gen_event(tenant) for _ in range(rng.randint(1, 3))]
                if rng.random() < 0.5:
                    fl = list(self.T(tenant).flows)
                    if fl:
                        evs.insert(rng.randrange(len(evs) + 1),
                                   {"type": "flow_rollback",
                                    "data": {"flow_id": rng.choice(fl), "to_seq": 1, "reason": "w"}})
                    self.do_append(tenant, evs, True, token="tok-w", role="writer")
                else:
                    self.do_append(tenant, evs, True, token="tok-r", role="reader")
                step += len(evs)
                continue
            if x < 0.27:
                n = rng.randint(2, 8) if rng.random() < 0.9 else rng.randint(20, 60)
                offset = {}
                clean = rng.random() < 0.75
                evs = [self.one(tenant, offset, clean=clean and rng.random() < 0.97) for _ in range(n)]
                if rng.random() < 0.12:
                    # the same event_id twice in one batch: same data (dup of the first) or not
                    withid = [e for e in evs if isinstance(e, dict) and e.get("event_id")]
                    if withid:
                        e2 = json.loads(json.dumps(rng.choice(withid)))
                        if rng.random() < 0.4 and isinstance(e2.get("data"), dict):
                            e2["data"]["zz_changed"] = None
                            e2["data"].pop("zz_changed")
                            for f, k, r in M.SCHEMA.get(e2["type"], []):
                                if k[0] == "text" and not r:
                                    e2["data"][f] = "other"
                                    break
                            self.bump("gen_inbatch_dup_changed")
                        else:
                            self.bump("gen_inbatch_dup_same")
                        evs.insert(rng.randrange(evs.index(withid[0]) + 1, len(evs) + 1), e2)
                if rng.random() < 0.1:
                    # a rollback inside the batch to a seq inside the same batch
                    fl = [e["data"]["flow_id"] for e in evs if e["type"] == "flow_registered"
                          and isinstance(e.get("data"), dict)] + list(self.T(tenant).flows)
                    if fl:
                        k = rng.randrange(len(evs) + 1)
                        evs.insert(k, {"type": "flow_rollback", "data": {
                            "flow_id": rng.choice(fl), "to_seq": self.m.head() + rng.randint(1, max(1, k)),
                            "reason": "in-batch"}})
                        self.bump("gen_inbatch_rollback")
                self.do_append(tenant, evs, True)
                step += n
            else:
                ev = self.one(tenant, {}, clean=rng.random() < 0.55)
                via = (ev["type"] == "flow_rollback" and rng.random() < 0.3
                       and isinstance(ev.get("data"), dict) and set(ev) <= {"type", "data", "event_id"}
                       and set(ev["data"]) == {"flow_id", "to_seq", "reason"}
                       and all(ev["data"][k] is not None for k in ev["data"])
                       and ev["data"]["reason"] != "")
                self.do_append(tenant, [ev], False, via_rollback_cmd=via)
                step += 1
            # Pauses spread the ts (whole seconds in duration_seconds, as-of-time between
            # events); the model takes the server's ts, so how long they last is no matter.
            # At most one long pause per 250 steps keeps the run short.
            if rng.random() < 0.012:
                if self.naps < max(1, self.steps // 250):
                    self.naps += 1
                    time.sleep(rng.uniform(0.9, 1.7))
            elif rng.random() < 0.05:
                time.sleep(rng.uniform(0.0, 0.05))

    # ---------------------------------------------------------------- verification
    def fix_wire(self, o):
        if isinstance(o, msgwire.TS):
            return M.fmt_ts(int(o))
        if isinstance(o, dict):
            return {k: self.fix_wire(v) for k, v in o.items()}
        if isinstance(o, list):
            return [self.fix_wire(v) for v in o]
        return o

    def diff(self, a, b, path=""):
        out = []
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in a:
                    out.append("%s.%s: missing in server" % (path, k))
                elif k not in b:
                    out.append("%s.%s: extra in server" % (path, k))
                else:
                    out += self.diff(a[k], b[k], path + "." + k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                out += self.diff(x, y, "%s[%d]" % (path, i))
        elif a != b or type(a) != type(b):
            out.append("%s: server %s, model %s" % (path, json.dumps(a)[:300], json.dumps(b)[:300]))
        return out

    def flows_to_check(self, tenant):
        return self.flows

    def verify_wire_all(self):
        """state of every flow (registered or not) as of every seq 1..head, and now."""
        head = self.m.head()
        host, port = self.server.rsplit(":", 1)
        for tenant, (tok, ten) in self.tenants.items():
            c = msgwire.Client(host, int(port), tok, ten, timeout=CLI_TIMEOUT)
            for fid in self.flows_to_check(tenant):
                if (tenant, fid) in self.tainted:
                    continue
                nbad = 0
                for s in list(range(1, head + 1)) + [None]:
                    kw = {"flow_id": fid}
                    if s is not None:
                        kw["as_of_seq"] = s
                    r = c.call("state", **kw)
                    exp = self.m.state(tenant, fid, s)
                    self.bump("wire_state_checked")
                    if exp is None:
                        ok = (not r["ok"]) and r["error"]["code"] == "not_found"
                        if not ok:
                            nbad += 1
                            if nbad <= 3:
                                self.report("state_asof", {"tenant": tenant, "flow": fid, "as_of_seq": s,
                                                           "expected": "not_found", "server": self.fix_wire(r)},
                                            self.cmdline(tenant, ["state", fid] + (["--as-of-seq", str(s)] if s else [])))
                        continue
                    if not r["ok"]:
                        got = None
                        dd = ["server error %s" % r["error"]]
                    else:
                        got = self.fix_wire(r["result"])
                        dd = self.diff(got, exp)
                    if dd:
                        nbad += 1
                        if nbad <= 3:
                            self.report("state_asof", {"tenant": tenant, "flow": fid, "as_of_seq": s,
                                                       "diff": dd[:20]},
                                        self.cmdline(tenant, ["state", fid] + (["--as-of-seq", str(s)] if s else [])))
                    else:
                        self.bump("wire_state_match")
                if nbad:
                    self.bump("wire_state_flows_bad")
            c.close()

    def verify_cli(self):
        rng = self.rng
        head = self.m.head()
        n = self.samples
        for tenant in self.tenants:
            for fid in self.flows_to_check(tenant):
                if (tenant, fid) in self.tainted or "\0" in fid:
                    continue
                # state now + sampled as-of seqs (the wire read took every seq); a flow this
                # tenant never registered gets fewer reads (all not_found)
                p0 = self.m.snaps.get((tenant, fid))
                ss = [None, head] + [rng.randint(1, head) for _ in range(n if p0 else 1)]
                if p0:
                    r0 = p0[0][0]
                    ss += [r0 - 1, r0] if r0 > 1 else [r0]
                for s in ss:
                    args = ["state", fid] + (["--as-of-seq", str(s)] if s is not None else [])
                    rc, out, err = self.cli(tenant, args)
                    exp = self.m.state(tenant, fid, s)
                    self.bump("cli_state_checked")
                    self.cmp_obj("cli_state", tenant, args, rc, out, exp)
                # beyond head
                args = ["state", fid, "--as-of-seq", str(head + 1)]
                rc, out, err = self.cli(tenant, args)
                self.cmp_obj("cli_state_beyond_head", tenant, args, rc, out,
                             "bad_request" if self.m.state(tenant, fid) else "bad_request_or_not_found")
                # as-of-time
                times = [self.m.log[0]["ts"] - 1, self.m.log[-1]["ts"] + 10 ** 9]
                for _ in range(n if p0 else 0):
                    e = rng.choice(self.m.log)
                    times.append(e["ts"] + rng.choice([-1, 0, 1]))
                for T in times:
                    s = self.m.seq_at_time(T)
                    exp = self.m.state(tenant, fid, s) if s >= 1 else None
                    args = ["state", fid, "--as-of-time", M.fmt_ts(T)]
                    rc, out, err = self.cli(tenant, args)
                    self.bump("cli_asof_time_checked")
                    self.cmp_obj("cli_state_asof_time", tenant, args, rc, out, exp)
                # history
                for lim in ((None, 1, 2, 0, 50) if p0 else (None,)):
                    args = ["history", fid] + (["--limit", str(lim)] if lim is not None else [])
                    exp = self.m.history(tenant, fid, 20 if not lim else lim)
                    rc, out, err = self.cli(tenant, args)
                    self.bump("cli_history_checked")
                    self.cmp_obj("cli_history", tenant, args, rc, out, exp)
                # timeline of the flow
                args = ["timeline", "--flow", fid]
                rc, out, err = self.cli(tenant, args)
                self.cmp_list("cli_timeline_flow", tenant, args, rc, out, self.m.events(tenant, flow=fid))
                args = ["log", "--flow", fid]
                rc, out, err = self.cli(tenant, args)
                self.cmp_list("cli_log_flow", tenant, args, rc, out, self.m.events(tenant, flow=fid))
            # log, by type, by run
            args = ["log"]
            rc, out, err = self.cli(tenant, args)
            self.cmp_list("cli_log", tenant, args, rc, out, self.m.events(tenant))
            fr = rng.randint(1, head)
            args = ["log", "--from", str(fr), "--limit", "7"]
            rc, out, err = self.cli(tenant, args)
            self.cmp_list("cli_log_from", tenant, args, rc, out,
                          [e for e in self.m.events(tenant) if e["seq"] >= fr][:7])
            for t in M.TYPES:
                args = ["log", "--type", t]
                rc, out, err = self.cli(tenant, args)
                self.cmp_list("cli_log_type", tenant, args, rc, out, self.m.events(tenant, type_=t))
            T = self.T(tenant)
            rids = [r for r in T.run_owner if "\0" not in r]
            rng.shuffle(rids)
            for rid in rids[:n] + ["nope-1"]:
                for args in (["timeline", "--run", rid], ["log", "--run", rid]):
                    rc, out, err = self.cli(tenant, args)
                    self.cmp_list("cli_" + args[0] + "_run", tenant, args, rc, out,
                                  self.m.events(tenant, run=rid))
            # tables
            for name, cols in M.INDEXED.items():
                args = ["table", name]
                rc, out, err = self.cli(tenant, args)
                self.cmp_table(tenant, args, rc, out, self.m.table(tenant, name))
                allrows = self.m.table(tenant, name)
                for col in cols:
                    vals = sorted({r[col] for r in allrows if r[col] is not None and "\0" not in r[col]})
                    rng.shuffle(vals)
                    vals = vals[:n] + ["no-such-value"]
                    for v in vals:
                        args = ["table", name, "--where", "%s=%s" % (col, v)]
                        rc, out, err = self.cli(tenant, args)
                        self.cmp_table(tenant, args, rc, out, self.m.table(tenant, name, col, v))

    def cmp_obj(self, kind, tenant, args, rc, out, exp):
        self.bump("n_" + kind)
        repro = self.cmdline(tenant, args)
        if exp is None or exp == "bad_request" or exp == "bad_request_or_not_found":
            codes = {None: ["not_found"], "bad_request": ["bad_request"]}.get(exp, ["bad_request", "not_found"])
            code = "/".join(codes)
            if not (rc != 0 and len(out) == 1 and out[0].get("error", {}).get("code") in codes):
                self.report(kind, {"tenant": tenant, "args": args, "expected": code, "server": out}, repro)
            else:
                self.bump(kind + "_match")
            return
        if rc != 0 or len(out) != 1:
            self.report(kind, {"tenant": tenant, "args": args, "rc": rc, "server": out}, repro)
            return
        dd = self.diff(out[0], exp)
        if dd:
            self.report(kind, {"tenant": tenant, "args": args, "diff": dd[:20]}, repro)
        else:
            self.bump(kind + "_match")

    def cmp_list(self, kind, tenant, args, rc, out, exp):
        self.bump("n_" + kind)
        if kind == "follow":
            self.bump("n_follow_events", len(exp))
        repro = self.cmdline(tenant, args)
        self.bump(kind + "_checked")
        if rc != 0:
            self.report(kind, {"tenant": tenant, "args": args, "rc": rc, "server": out[:3]}, repro)
            return
        if out != exp:
            dd = self.diff(out, exp) if len(out) == len(exp) else [
                "length server %d model %d; first differing: server %s model %s" % (
                    len(out), len(exp),
                    next((json.dumps(a) for a, b in zip(out + [None] * 9999, exp) if a != b), None),
                    next((json.dumps(b) for a, b in zip(out + [None] * 9999, exp) if a != b), None))]
            # key order of data is part of "as appended"
            self.report(kind, {"tenant": tenant, "args": args, "diff": dd[:10]}, repro)
        else:
            # also check data key order
            for a, b in zip(out, exp):
                if list(a["data"]) != list(b["data"]):
                    self.report("data_key_order", {"args": args, "server": a, "model": b}, repro)
                    break
            self.bump(kind + "_match")

    def cmp_table(self, tenant, args, rc, out, exp):
        self.bump("n_cli_table")
        repro = self.cmdline(tenant, args)
        self.bump("cli_table_checked")
        if rc != 0:
            self.report("cli_table", {"tenant": tenant, "args": args, "rc": rc, "server": out[:3]}, repro)
            return
        key = lambda r: json.dumps(r, sort_keys=True)
        if sorted(out, key=key) != sorted(exp, key=key):
            missing = [r for r in exp if r not in out]
            extra = [r for r in out if r not in exp]
            detail = {"tenant": tenant, "args": args, "n_server": len(out), "n_model": len(exp)}
            if len(missing) == len(extra):
                # the same rows with other values: name the columns that differ
                pk = lambda r: self.rowkey(r)  # noqa: E731
                byk = {json.dumps(pk(r)): r for r in extra}
                dd = []
                for r in missing:
                    o = byk.get(json.dumps(pk(r)))
                    dd += ["%s%s" % (pk(r), x) for x in self.diff(o, r)] if o else ["%s: missing" % pk(r)]
                detail["diff"] = dd[:10]
            else:
                detail.update(missing=missing[:3], extra=extra[:3])
            self.report("cli_table", detail, repro)
        else:
            self.bump("cli_table_match")
            # PROTOCOL.md section 6 (not the contract): storage order, checked for unfiltered
            # tables and run_id filters only; reported separately as informational.
            if len(args) == 2 or (len(args) == 4 and args[3].startswith("run_id=")):
                want = self.protocol_order(tenant, args[1], exp)
                if out != want:
                    self.report("info_table_order", {"args": args, "server": [self.rowkey(r) for r in out][:20],
                                                     "protocol_order": [self.rowkey(r) for r in want][:20]}, repro)
                else:
                    self.bump("info_table_order_match")

    def rowkey(self, r):
        return [r.get(k) for k in ("flow_id", "run_id", "iteration_num", "artifact_ref", "job_type") if k in r]

    def protocol_order(self, tenant, name, rows):
        T = self.T(tenant)
        owner = T.run_owner
        def k(r):
            fid = r.get("flow_id") if name in ("migration_flows", "migration_runs") else owner.get(r["run_id"])
            runno = 0
            if "run_id" in r:
                runno = T.flows[owner[r["run_id"]]]["runs"][r["run_id"]]["attempt_number"]
            rest = [x.encode() if isinstance(x, str) else x for x in
                    (r.get("iteration_num", 0), r.get("artifact_ref", ""), r.get("job_type", ""))]
            return (fid.encode(), runno, rest)
        return sorted(rows, key=k)

    # ---------------------------------------------------------------- probes
    def probe(self):
        """Targeted cases (no randomness): NUL bytes inside ids, tenants whose names are a
        prefix or an extension of another's, boundary iteration_nums, retries that differ only
        after a NUL, integers up to 2^63-1, runs lasting over 1 and 2 seconds, a rollback chain."""
        self.tenants.update(PROBE_TENANTS)
        A = self.do_append

        def reg(t, f):
            A(t, [{"type": "flow_registered", "data": {"flow_id": f, "flow_name": f + ".xml"}}], False)

        for t in ("acme", "acme:eng", "acm"):
            reg(t, "a")
            reg(t, "a\u0000b")
            reg(t, "a\u0000")
            A(t, [{"type": "run_started", "data": {"flow_id": "a", "run_id": "r"}}], False)
            A(t, [{"type": "run_started", "data": {"flow_id": "a\u0000b", "run_id": "r\u0000"}}], False)
            A(t, [{"type": "run_started", "data": {"flow_id": "a\u0000", "run_id": "r\u0000x"}}], False)
        for ref in ("x", "x\u0000y", "x\u0000", "\u0000", "X", "x\u0001"):
            A("acme", [{"type": "patch", "data": {"run_id": "r", "iteration_num": 1, "artifact_ref": ref}}], False)
            A("acme", [{"type": "scan_verdict", "data": {"run_id": "r", "iteration_num": 1, "artifact_ref": ref,
                                                         "scan_status": "PENDING"}}], False)
        for n in (1, 256, 2 ** 31 - 1, 65536, 65535, 16777216, 255):
            A("acme", [{"type": "iteration_step", "data": {"run_id": "r", "iteration_num": n, "step": "s",
                                                           "step_status": "RUNNING"}}], False)
        # retries whose data differ only after a NUL byte; event_ids differing after a NUL
        for desc in ("a\u0000b", "a\u0000c", "a", "a\u0000b"):
            A("acme", [{"type": "flow_updated", "event_id": "nul-1",
                        "data": {"flow_id": "a", "description": desc}}], False)
        A("acme", [{"type": "flow_updated", "event_id": "nul\u0000", "data": {"flow_id": "a"}}], False)
        A("acme", [{"type": "flow_updated", "event_id": "nul", "data": {"flow_id": "a", "owner": "o"}}], False)
        # integers
        A("acme", [{"type": "exec_result", "data": {"run_id": "r", "iteration_num": 1, "job_type": "flow_job",
                                                    "status": "SUCCESS", "runtime_s": 2 ** 63 - 1}}], False)
        A("acme", [{"type": "exec_result", "data": {"run_id": "r", "iteration_num": 2, "job_type": "flow_job",
                                                    "status": "SUCCESS", "runtime_s": 0}}], False)
        # durations over 1 and 2 s (the model takes the server's ts: the sleeps only make them long)
        A("acme", [{"type": "run_started", "data": {"flow_id": "a", "run_id": "dur1"}}], False)
        time.sleep(1.5)
        A("acme", [{"type": "run_status", "data": {"run_id": "dur1", "status": "SUCCESS"}}], False)
        A("acme", [{"type": "run_started", "data": {"flow_id": "a", "run_id": "dur2"}}], False)
        time.sleep(2.05)
        A("acme", [{"type": "run_status", "data": {"run_id": "dur2", "status": "CANCELLED",
                                                   "flow_status": "NEEDS_HUMAN"}}], False)
        # a rollback chain, then a run_id used before the rollbacks
        h = self.m.head()
        A("acme", [{"type": "flow_rollback", "data": {"flow_id": "a", "to_seq": 5, "reason": "r"}}], False)
        A("acme", [{"type": "flow_rollback", "data": {"flow_id": "a", "to_seq": h, "reason": "r"}}], False)
        A("acme", [{"type": "flow_rollback", "data": {"flow_id": "a", "to_seq": self.m.head() - 1,
                                                      "reason": "r"}}], False)
        A("acme", [{"type": "run_started", "data": {"flow_id": "a", "run_id": "dur1"}}], False)
        self.flows = ["a", "a\u0000b", "a\u0000", "b"]

    # ---------------------------------------------------------------- TAP summary
    # The checks printed, in order: (name, discrepancy kinds).  A kind not listed counts against
    # the first check.
    CHECKS = [
        ("appends", ["append_outcome", "append_result", "ts_decreasing", "message_field",
                     "pipelined_output"]),
        ("follow", ["follow"]),
        ("wire", ["state_asof"]),
        ("state", ["cli_state", "cli_state_beyond_head", "cli_state_asof_time", "cli_history"]),
        ("log", ["cli_log", "cli_log_from", "cli_log_type", "cli_log_flow", "cli_log_run",
                 "cli_timeline_flow", "cli_timeline_run", "data_key_order", "follow_order"]),
        ("table", ["cli_table", "info_table_order"]),
    ]

    def describe(self, name, label):
        c = lambda *ks: sum(self.counts.get(k, 0) for k in ks)  # noqa: E731
        nflows = len(self.tenants) * len(self.flows)
        if name == "appends":
            return ("%s: %d appends (%d events: %d batches, %d single, %d pipelined lines in %d "
                    "concurrent rounds, %d rollback commands) each answered as the contract says "
                    "(%d committed, %d duplicates, %d refused with the expected error)" % (
                        label, c("appends_batch", "appends_single") + 3 * c("concurrent_rounds"),
                        c("events_sent", "pipelined_lines"), c("appends_batch"),
                        c("appends_single") - c("via_rollback_cmd"), c("pipelined_lines"),
                        c("concurrent_rounds"), c("via_rollback_cmd"), self.m.head(),
                        c("result_dup") + c("pipelined_dup"),
                        c("appends_err_match", "pipelined_err_match")))
        if name == "follow":
            return ("%s: %d log --follow subscribers, started before the first append, printed "
                    "exactly the model's events (%d in all)" % (label, len(self.followers),
                                                                c("n_follow_events")))
        if name == "wire":
            return ("%s: state as of every seq 1..%d and now, of %d flows in %d tenants, equals the "
                    "model (%d reads over the wire)" % (label, self.m.head(), len(self.flows),
                                                        len(self.tenants), c("wire_state_checked")))
        if name == "state":
            return ("%s: CLI state of %d flows (%d reads: now, sampled as-of seqs, beyond head), "
                    "as-of-time (%d) and history (%d) equal the model" % (
                        label, nflows, c("n_cli_state", "n_cli_state_beyond_head"),
                        c("n_cli_state_asof_time"), c("n_cli_history")))
        if name == "log":
            return ("%s: %d log and timeline reads (whole log, --from/--limit, --type, --flow, "
                    "sampled --run) equal the model's events, data as appended" % (
                        label, c(*["n_" + k for k in self.CHECKS[4][1]])))
        if name == "table":
            return ("%s: %d table reads (7 tables whole, sampled --where values of every indexed "
                    "column) equal the model's rows, in PROTOCOL.md's order" % (
                        label, c("n_cli_table")))
        return label + ": " + name

    def summary(self, label, names):
        known = {k for _, ks in self.CHECKS for k in ks}
        failed = 0
        for name, kinds in self.CHECKS:
            if name not in names:
                continue
            mine = [d for d in self.disc if d["kind"] in kinds
                    or (name == names[0] and d["kind"] not in known)]
            desc = self.describe(name, label)
            if not mine:
                say("ok - " + desc)
                continue
            failed += 1
            say("not ok - " + desc)
            say("# %s: %d discrepancies; the first %d:" % (label, len(mine), min(3, len(mine))))
            for d in mine[:3]:
                say("#   %s: %s" % (d["kind"], json.dumps(d["detail"], ensure_ascii=False)[:1500]))
                if d.get("repro"):
                    say("#     reproduce: %s" % d["repro"][:1500])
        return failed

    def main(self, probe):
        t0 = time.monotonic()
        times = []
        try:
            if probe:
                self.probe()
                names = ["appends", "wire", "state", "log", "table"]
                label = "probes"
            else:
                self.start_followers()
                self.run()
                self.check_followers()
                names = [n for n, _ in self.CHECKS]
                label = "seed %d" % self.seed
            times.append("appends %.1fs" % (time.monotonic() - t0))
            t1 = time.monotonic()
            self.verify_wire_all()
            times.append("wire reads %.1fs" % (time.monotonic() - t1))
            t1 = time.monotonic()
            self.verify_cli()
            times.append("CLI reads %.1fs" % (time.monotonic() - t1))
        finally:
            self.stop_followers()
        kinds = {}
        for d in self.disc:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        rep = {"seed": self.seed, "probe": probe, "steps": self.steps, "head": self.m.head(),
               "counts": self.counts, "discrepancy_kinds": kinds, "discrepancies": self.disc,
               "tainted": sorted(map(str, self.tainted))}
        with open(os.path.join(self.work, "report.json"), "w") as f:
            json.dump(rep, f, indent=1, ensure_ascii=False)
        failed = self.summary(label, names)
        say("# %s: head %d; %s" % (label, self.m.head(), ", ".join(times)))
        return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-tokens", metavar="FILE", help="write the tokens file for flowlogd and exit")
    ap.add_argument("--server", help="HOST:PORT of a fresh flowlogd started with that tokens file")
    ap.add_argument("--flowlog", help="the flowlog CLI")
    ap.add_argument("--flowlog-libpath", help="prepended to LD_LIBRARY_PATH for the CLI")
    ap.add_argument("--work", help="a directory for the subscribers' output and report.json")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--samples", type=int, default=6,
                    help="CLI reads sampled per kind (as-of seqs, as-of times, runs, --where values)")
    ap.add_argument("--probe", action="store_true", help="the targeted cases instead of a seed")
    a = ap.parse_args()
    if a.write_tokens:
        fd = os.open(a.write_tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(TOKENS)
        return 0
    if not (a.server and a.flowlog and a.work) or (a.seed is None) == (not a.probe):
        ap.error("--server, --flowlog, --work and one of --seed, --probe are needed")
    return Driver(a).main(a.probe)


if __name__ == "__main__":
    sys.exit(main())
