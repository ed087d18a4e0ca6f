#!/usr/bin/env python3
"""Reference model of flowlog CONTRACT.md sections 2-4 (events, appends, reads).

Pure stdlib.  Written from the contract only (plus proto/PROTOCOL.md where the contract defers
to it: the check order inside a batch); drive.py compares the server with it.

Usage (library):
    m = Model()
    exp = m.predict(tenant, events)           # expected outcome, before the server answers
    m.commit(tenant, events, acks)            # apply, with the server's (seq, ts) per event
    m.state(tenant, flow_id, as_of_seq=None)  # -> dict exactly as section 4 "State as JSON"
Timestamps inside the model are integer microseconds since the epoch.

Choices where the contract is silent are collected in OPTS (see AMBIGUOUS notes).
"""
import copy
import bisect
import datetime
import json

TYPES = ["flow_registered", "flow_updated", "flow_status", "run_started", "run_status",
         "iteration_step", "patch", "scan_verdict", "exec_result", "human_request",
         "human_resolution", "flow_rollback"]
FLOW_STATUSES = ["NOT_STARTED", "RUNNING", "NEEDS_HUMAN", "FAILED", "DONE", "STOPPED"]
RUN_STATUSES = ["CREATING", "QUEUED", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"]
TERMINAL = {"SUCCESS", "FAILED", "CANCELLED"}
RUN_RANK = {"CREATING": 0, "QUEUED": 1, "RUNNING": 2, "SUCCESS": 3, "FAILED": 3, "CANCELLED": 3}
SCAN_RANK = {"PENDING": 0, "SCANNING": 1, "PASSED": 2, "BLOCKED": 2}
SCAN_FINAL = {"PASSED", "BLOCKED"}
STEP_FINAL = {"COMPLETED", "FAILED"}
TEXT_MAX = 64 * 1024
INT31 = 2 ** 31 - 1

# field kinds: ("id",) 1..256 bytes; ("text",) 0..64KiB; ("enum", [...]); ("int", lo, hi);
# ("step",) 1..64 bytes; ("json",) <= 1 MiB valid JSON
ID = ("id",)
TEXT = ("text",)
ITER = ("int", 1, INT31)
PCT = ("int", 0, 100)
SCHEMA = {
    "flow_registered": [("flow_id", ID, True), ("flow_name", TEXT, True), ("server", TEXT, False),
                        ("nifi_xml_path", TEXT, False), ("description", TEXT, False),
                        ("priority", ("enum", ["P0", "P1", "P2"]), False), ("owner", TEXT, False)],
    "flow_updated": [("flow_id", ID, True), ("flow_name", TEXT, False), ("server", TEXT, False),
                     ("nifi_xml_path", TEXT, False), ("description", TEXT, False),
                     ("priority", ("enum", ["P0", "P1", "P2"]), False), ("owner", TEXT, False)],
    "flow_status": [("flow_id", ID, True), ("migration_status", ("enum", FLOW_STATUSES), True)],
    "run_started": [("run_id", ID, True), ("flow_id", ID, True), ("job_id", ID, False),
                    ("job_run_id", ID, False),
                    ("status", ("enum", ["CREATING", "QUEUED", "RUNNING"]), False),
                    ("triggered_by", TEXT, False)],
    "run_status": [("run_id", ID, True), ("status", ("enum", RUN_STATUSES), True),
                   ("job_id", ID, False), ("job_run_id", ID, False), ("status_message", TEXT, False),
                   ("error_message", TEXT, False), ("progress_percentage", PCT, False),
                   ("validation_percentage", PCT, False),
                   ("flow_status", ("enum", FLOW_STATUSES), False)],
    "iteration_step": [("run_id", ID, True), ("iteration_num", ITER, True), ("step", ("step",), True),
                       ("step_status", ("enum", ["RUNNING", "COMPLETED", "FAILED"]), True),
                       ("summary", TEXT, False), ("error", TEXT, False)],
    "patch": [("run_id", ID, True), ("iteration_num", ITER, True), ("artifact_ref", ID, True),
              ("patch_summary", TEXT, False), ("diff_ref", TEXT, False)],
    "scan_verdict": [("run_id", ID, True), ("iteration_num", ITER, True), ("artifact_ref", ID, True),
                     ("scan_status", ("enum", ["PENDING", "SCANNING", "PASSED", "BLOCKED"]), True),
                     ("findings_json", ("json",), False)],
    "exec_result": [("run_id", ID, True), ("iteration_num", ITER, True),
                    ("job_type", ("enum", ["flow_job", "validation_job"]), True),
                    ("status", ("enum", ["SUCCESS", "FAILED", "TIMEOUT"]), True),
                    ("runtime_s", ("int", 0, 2 ** 63 - 1), False), ("error", TEXT, False),
                    ("logs_ref", TEXT, False)],
    "human_request": [("run_id", ID, True), ("iteration_num", ITER, True),
                      ("reason", ("enum", ["sast_blocked", "validation_failed", "manual_review"]), True),
                      ("instructions", TEXT, False)],
    "human_resolution": [("run_id", ID, True), ("iteration_num", ITER, True),
                         ("status", ("enum", ["RESOLVED", "IGNORED"]), True)],
    "flow_rollback": [("flow_id", ID, True), ("to_seq", ("int", -2 ** 63, 2 ** 64 - 1), True),
                      ("reason", TEXT, True)],
}
FLOW_LEVEL = {"flow_registered", "flow_updated", "flow_status", "flow_rollback", "run_started"}
RUN_LEVEL = {"run_status", "iteration_step", "patch", "scan_verdict", "exec_result",
             "human_request", "human_resolution"}

FLOW_COLS = ["flow_id", "flow_name", "migration_status", "current_run_id", "last_update_ts", "server",
             "nifi_xml_path", "description", "priority", "owner", "current_attempt_id",
             "total_attempts", "successful_conversions", "first_attempt_at", "last_attempt_at"]
RUN_COLS = ["run_id", "flow_id", "job_run_id", "start_ts", "end_ts", "status"]
ITER_COLS = ["run_id", "iteration_num", "step", "step_status", "ts", "summary", "error"]
PATCH_COLS = ["run_id", "iteration_num", "artifact_ref", "patch_summary", "diff_ref", "ts"]
SAST_COLS = ["run_id", "iteration_num", "artifact_ref", "scan_status", "findings_json", "ts"]
EXEC_COLS = ["run_id", "iteration_num", "job_type", "status", "runtime_s", "error", "logs_ref", "ts"]
HUMAN_COLS = ["run_id", "iteration_num", "reason", "status", "instructions", "ts"]
ATTEMPT_COLS = ["attempt_id", "attempt_number", "flow_id", "job_id", "job_run_id", "status",
                "started_at", "completed_at", "duration_seconds", "progress_percentage",
                "validation_percentage", "iterations", "generated_notebooks", "error_message",
                "status_message", "triggered_by"]
TS_COLS = {"last_update_ts", "first_attempt_at", "last_attempt_at", "start_ts", "end_ts", "ts",
           "started_at", "completed_at"}
TABLES = {  # name -> (proj key, columns)
    "migration_flows": (None, FLOW_COLS),
    "migration_runs": ("runs", RUN_COLS),
    "migration_iterations": ("iter", ITER_COLS),
    "migration_patches": ("patch", PATCH_COLS),
    "migration_sast_results": ("sast", SAST_COLS),
    "migration_exec_results": ("exec", EXEC_COLS),
    "migration_human_requests": ("human", HUMAN_COLS),
}
INDEXED = {
    "migration_flows": ["flow_name", "migration_status"],
    "migration_runs": ["flow_id", "job_run_id", "status"],
    "migration_iterations": ["run_id", "step"],
    "migration_patches": ["run_id"], "migration_sast_results": ["run_id"],
    "migration_exec_results": ["run_id"], "migration_human_requests": ["run_id"],
}

# Points where the contract is silent; the value is the model's reading.
OPTS = {
    # upserts / updates: an absent (or null) optional field keeps the row's previous value
    # (flow_updated: "those columns change" => only the given ones).
    "upsert_absent_keeps": True,
    # run_status: absent optional fields keep their previous value
    "run_status_absent_keeps": True,
    # run_started with a missing flow AND a reused run_id: not_found first
    "run_started_notfound_first": True,
}


def fmt_ts(us):
    if us is None:
        return None
    d = datetime.datetime(1970, 1, 1) + datetime.timedelta(microseconds=us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(s):
    if s is None:
        return None
    assert s.endswith("Z") and len(s) == 27, s
    d = datetime.datetime.strptime(s[:-1], "%Y-%m-%dT%H:%M:%S.%f")
    return (d - datetime.datetime(1970, 1, 1)) // datetime.timedelta(microseconds=1)



def upsert(old, keeps, cols, d, optional, **fixed):
    """The row an upsert leaves: the old one (or all nulls) with the key and required columns
    set, and each optional column set from d when given (or always, when absent ones do not
    keep their value)."""
    row = old if (old is not None and keeps) else {c: None for c in cols}
    row.update(fixed)
    for c in optional:
        if d.get(c) is not None or not keeps:
            row[c] = d.get(c)
    return row

class Err(Exception):
    def __init__(self, code, field=None, version=None):
        super().__init__(code)
        self.code = code
        self.field = field
        self.version = version


def _bad_const(x):
    raise ValueError("not JSON: " + x)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_form(ev):
    """Raise Err('bad_request', field) if the event's form is wrong."""
    if not isinstance(ev, dict):
        raise Err("bad_request", "event")
    for k in ev:
        if k not in ("type", "data", "event_id", "expected_version"):
            raise Err("bad_request", k)
    t = ev.get("type")
    if not isinstance(t, str) or t not in SCHEMA:
        raise Err("bad_request", "type")
    d = ev.get("data")
    if not isinstance(d, dict):
        raise Err("bad_request", "data")
    eid = ev.get("event_id")
    if eid is not None:
        if not isinstance(eid, str) or not (1 <= len(eid.encode()) <= 128):
            raise Err("bad_request", "event_id")
    xv = ev.get("expected_version")
    if xv is not None:
        if not is_int(xv) or xv < 0:
            raise Err("bad_request", "expected_version")
    fields = {f: (kind, req) for f, kind, req in SCHEMA[t]}
    for k in d:
        if k not in fields:
            raise Err("bad_request", "data." + k)
    for f, kind, req in SCHEMA[t]:
        v = d.get(f)
        if v is None:
            if req:
                raise Err("bad_request", "data." + f)
            continue
        k0 = kind[0]
        if k0 in ("id", "text", "step", "json", "enum"):
            if not isinstance(v, str):
                raise Err("bad_request", "data." + f)
            n = len(v.encode("utf-8"))
            if k0 == "id" and not (1 <= n <= 256):
                raise Err("bad_request", "data." + f)
            if k0 == "text" and n > TEXT_MAX:
                raise Err("bad_request", "data." + f)
            if k0 == "step" and not (1 <= n <= 64):
                raise Err("bad_request", "data." + f)
            if k0 == "enum" and v not in kind[1]:
                raise Err("bad_request", "data." + f)
            if k0 == "json":
                if n > 1024 * 1024:
                    raise Err("bad_request", "data." + f)
                try:
                    json.loads(v, parse_constant=_bad_const)
                except ValueError:
                    raise Err("bad_request", "data." + f)
        elif k0 == "int":
            if not is_int(v) or not (kind[1] <= v <= kind[2]):
                raise Err("bad_request", "data." + f)
    if len(json.dumps(d, ensure_ascii=False).encode()) > 1024 * 1024:
        raise Err("too_large", "event")
    if t == "run_status" and d.get("flow_status") is not None and d["status"] not in TERMINAL:
        raise Err("bad_request", "data.flow_status")


def canon(ev):
    return (ev["type"], {k: v for k, v in ev["data"].items() if v is not None})


def new_flow_proj(flow_id, d, seq, ts):
    row = {c: None for c in FLOW_COLS}
    row.update(flow_id=flow_id, flow_name=d["flow_name"], migration_status="NOT_STARTED",
               total_attempts=0, successful_conversions=0, last_update_ts=ts)
    for c in ("server", "nifi_xml_path", "description", "priority", "owner"):
        row[c] = d.get(c)
    return {"reg_seq": seq, "flow": row, "runs": {}, "iter": {}, "patch": {}, "sast": {},
            "exec": {}, "human": {}}


class Tenant:
    def __init__(self):
        self.flows = {}        # flow_id -> current projection
        self.versions = {}     # flow_id -> version
        self.run_owner = {}    # run_id -> flow_id, for every run_id ever committed
        self.event_ids = {}    # event_id -> (seq, ts, canon)


class Model:
    def __init__(self, opts=None):
        self.opts = dict(OPTS)
        if opts:
            self.opts.update(opts)
        self.tenants = {}
        self.log = []          # committed events: dict(seq, ts, tenant, type, event_id, data, flow_id, run_id)
        self.snaps = {}        # (tenant, flow_id) -> ([seq...], [proj...])
        self.streams = {}      # (tenant, flow_id) -> [seq...]

    def head(self):
        return len(self.log)

    def tenant(self, t):
        if t not in self.tenants:
            self.tenants[t] = Tenant()
        return self.tenants[t]

    # ------------------------------------------------------------------ appends
    def _snap_at(self, tenant, flow_id, seq, staged):
        """The flow's projection right after event `seq` (None if it did not exist)."""
        best = None
        key = (tenant, flow_id)
        if key in self.snaps:
            seqs, projs = self.snaps[key]
            i = bisect.bisect_right(seqs, seq)
            if i:
                best = (seqs[i - 1], projs[i - 1])
        for (s, fid, p) in staged:
            if fid == flow_id and s <= seq and (best is None or s >= best[0]):
                best = (s, p)
        return None if best is None else best[1]

    def _process(self, tenant, events, tss, role="admin"):
        """Run an append.  tss: list of ts per event (None: unknown yet).
        Returns (ok, info).  ok: info = (results, T, staged, newlog) where results are
        ('new', seq) / ('dup', seq, ts); else info = (code, index, version, field)."""
        T0 = self.tenant(tenant)
        T = copy.deepcopy(T0)
        staged = []     # (seq, flow_id, proj copy)
        newlog = []
        results = []
        seq = self.head()
        if not (1 <= len(events) <= 1000):
            return False, ("too_large" if events else "bad_request", None, None, None)
        if role == "reader":
            return False, ("forbidden", None, None, None)
        if role == "writer":
            for i, ev in enumerate(events):
                if isinstance(ev, dict) and ev.get("type") == "flow_rollback":
                    return False, ("forbidden", i, None, None)
        for i, ev in enumerate(events):
            try:
                check_form(ev)
                eid = ev.get("event_id")
                if eid is not None and eid in T.event_ids:
                    oseq, ots, oc = T.event_ids[eid]
                    if oc != canon(ev):
                        raise Err("idempotency_mismatch")
                    results.append(("dup", oseq, ots))
                    continue
                ts = tss[i] if tss is not None else None
                fid = self._apply(T, tenant, ev, seq + 1, ts, staged)
                seq += 1
                T.versions[fid] = T.versions.get(fid, 0) + 1
                if eid is not None:
                    T.event_ids[eid] = (seq, ts, canon(ev))
                staged.append((seq, fid, copy.deepcopy(T.flows[fid])))
                d = ev["data"]
                newlog.append({"seq": seq, "ts": ts, "tenant": tenant, "type": ev["type"],
                               "event_id": eid, "data": d, "flow_id": fid,
                               "run_id": d.get("run_id")})
                results.append(("new", seq))
            except Err as e:
                return False, (e.code, i, e.version, e.field)
        return True, (results, T, staged, newlog)

    def _flow_version(self, T, fid):
        return T.versions.get(fid, 0)

    def _apply(self, T, tenant, ev, seq, ts, staged):
        """Check expected_version, existence, transitions; apply.  Returns flow_id."""
        t = ev["type"]
        d = ev["data"]
        xv = ev.get("expected_version")
        # which flow?
        if t in RUN_LEVEL:
            fid = T.run_owner.get(d["run_id"])
        else:
            fid = d["flow_id"]
        if xv is not None:
            v = self._flow_version(T, fid) if fid is not None else 0
            if v != xv:
                raise Err("conflict", version=v)
        # existence
        if t == "flow_registered":
            if fid in T.flows:
                raise Err("already_exists")
            T.flows[fid] = new_flow_proj(fid, d, seq, ts)
            return fid
        if t in RUN_LEVEL:
            if fid is None or fid not in T.flows or d["run_id"] not in T.flows[fid]["runs"]:
                raise Err("not_found")
        else:
            if fid not in T.flows:
                raise Err("not_found")
        P = T.flows[fid]
        F = P["flow"]
        if t == "run_started":
            if d["run_id"] in T.run_owner:
                raise Err("already_exists")
        if t == "flow_rollback":
            to = d["to_seq"]
            if not (P["reg_seq"] <= to < seq):
                raise Err("bad_request", "data.to_seq")
        run = None
        if t in RUN_LEVEL:
            run = P["runs"][d["run_id"]]
            if t not in ("run_status", "human_resolution") and run["status"] in TERMINAL:
                raise Err("invalid_transition")
        # transitions + apply
        keeps = self.opts["upsert_absent_keeps"]
        if t == "flow_updated":
            for c in ("flow_name", "server", "nifi_xml_path", "description", "priority", "owner"):
                if d.get(c) is not None:
                    F[c] = d[c]
        elif t == "flow_status":
            F["migration_status"] = d["migration_status"]
        elif t == "run_started":
            rid = d["run_id"]
            F["total_attempts"] += 1
            run = {"run_id": rid, "flow_id": fid, "job_run_id": d.get("job_run_id"), "start_ts": ts,
                   "end_ts": None, "status": d.get("status") or "RUNNING", "job_id": d.get("job_id"),
                   "progress_percentage": None, "validation_percentage": None,
                   "error_message": None, "status_message": None,
                   "triggered_by": d.get("triggered_by"), "attempt_number": F["total_attempts"]}
            P["runs"][rid] = run
            T.run_owner[rid] = fid
            F["current_run_id"] = rid
            F["current_attempt_id"] = rid
            F["migration_status"] = "RUNNING"
            if F["first_attempt_at"] is None:
                F["first_attempt_at"] = ts
            F["last_attempt_at"] = ts
        elif t == "run_status":
            st = d["status"]
            if run["status"] in TERMINAL:
                raise Err("invalid_transition")
            if RUN_RANK[st] < RUN_RANK[run["status"]]:
                raise Err("invalid_transition")
            run["status"] = st
            for c in ("job_id", "job_run_id", "status_message", "error_message",
                      "progress_percentage", "validation_percentage"):
                if d.get(c) is not None or not self.opts["run_status_absent_keeps"]:
                    run[c] = d.get(c)
            if st in TERMINAL:
                run["end_ts"] = ts
                if st == "SUCCESS":
                    F["successful_conversions"] += 1
                if F["current_run_id"] == run["run_id"]:
                    fs = d.get("flow_status")
                    if fs is None:
                        fs = {"SUCCESS": "DONE", "FAILED": "FAILED", "CANCELLED": "STOPPED"}[st]
                    F["migration_status"] = fs
        elif t == "iteration_step":
            key = (d["run_id"], d["iteration_num"])
            old = P["iter"].get(key)
            if old is not None and old["step_status"] in STEP_FINAL:
                raise Err("invalid_transition")
            P["iter"][key] = upsert(old, keeps, ITER_COLS, d, ("summary", "error"),
                                    run_id=key[0], iteration_num=key[1], step=d["step"],
                                    step_status=d["step_status"], ts=ts)
        elif t == "patch":
            key = (d["run_id"], d["iteration_num"], d["artifact_ref"])
            old = P["patch"].get(key)
            P["patch"][key] = upsert(old, keeps, PATCH_COLS, d, ("patch_summary", "diff_ref"),
                                     run_id=key[0], iteration_num=key[1], artifact_ref=key[2],
                                     ts=ts)
        elif t == "scan_verdict":
            key = (d["run_id"], d["iteration_num"], d["artifact_ref"])
            old = P["sast"].get(key)
            if old is not None:
                if old["scan_status"] in SCAN_FINAL:
                    raise Err("invalid_transition")
                if SCAN_RANK[d["scan_status"]] < SCAN_RANK[old["scan_status"]]:
                    raise Err("invalid_transition")
            P["sast"][key] = upsert(old, keeps, SAST_COLS, d, ("findings_json",),
                                    run_id=key[0], iteration_num=key[1], artifact_ref=key[2],
                                    scan_status=d["scan_status"], ts=ts)
        elif t == "exec_result":
            key = (d["run_id"], d["iteration_num"], d["job_type"])
            if key in P["exec"]:
                raise Err("invalid_transition")
            row = {c: None for c in EXEC_COLS}
            row.update(run_id=key[0], iteration_num=key[1], job_type=key[2], status=d["status"],
                       runtime_s=d.get("runtime_s"), error=d.get("error"),
                       logs_ref=d.get("logs_ref"), ts=ts)
            P["exec"][key] = row
        elif t == "human_request":
            key = (d["run_id"], d["iteration_num"])
            if key in P["human"]:
                raise Err("invalid_transition")
            P["human"][key] = {"run_id": key[0], "iteration_num": key[1], "reason": d["reason"],
                               "status": "PENDING", "instructions": d.get("instructions"), "ts": ts}
        elif t == "human_resolution":
            key = (d["run_id"], d["iteration_num"])
            row = P["human"].get(key)
            if row is None or row["status"] != "PENDING":
                raise Err("invalid_transition")
            row["status"] = d["status"]
            row["ts"] = ts
        elif t == "flow_rollback":
            old = self._snap_at(T_name(T, self), fid, d["to_seq"], staged)
            assert old is not None
            newp = copy.deepcopy(old)
            T.flows[fid] = newp
            P = newp
            F = newp["flow"]
        F["last_update_ts"] = ts
        return fid

    def predict(self, tenant, events, role="admin"):
        """Expected outcome: ('ok', [results]) or ('err', code, index, version, field)."""
        self._cur_tenant = tenant
        ok, info = self._process(tenant, events, None, role)
        if ok:
            return ("ok", info[0])
        return ("err",) + tuple(info)

    def commit(self, tenant, events, tss, role="admin", force_results=None):
        """Apply a successful append with the server's ts per event (None for duplicates)."""
        self._cur_tenant = tenant
        ok, info = self._process(tenant, events, tss, role)
        if not ok:
            return False
        results, T, staged, newlog = info
        self.tenants[tenant] = T
        for (s, fid, p) in staged:
            key = (tenant, fid)
            seqs, projs = self.snaps.setdefault(key, ([], []))
            seqs.append(s)
            projs.append(p)
            self.streams.setdefault(key, []).append(s)
        self.log.extend(newlog)
        return True

    # ------------------------------------------------------------------ reads
    def ts_of(self, seq):
        return self.log[seq - 1]["ts"]

    def seq_at_time(self, T):
        """Last seq with ts <= T (0 if none)."""
        s = 0
        for e in self.log:
            if e["ts"] <= T:
                s = e["seq"]
        return s

    def proj_at(self, tenant, flow_id, seq):
        key = (tenant, flow_id)
        if key not in self.snaps:
            return None
        seqs, projs = self.snaps[key]
        i = bisect.bisect_right(seqs, seq)
        return projs[i - 1] if i else None

    def version_at(self, tenant, flow_id, seq):
        return bisect.bisect_right(self.streams.get((tenant, flow_id), []), seq)

    def state(self, tenant, flow_id, as_of_seq=None):
        """Section 4 state JSON (timestamps as RFC 3339 strings), or None for not_found."""
        s = self.head() if as_of_seq is None else as_of_seq
        p = self.proj_at(tenant, flow_id, s)
        if p is None:
            return None
        return render(p, s, self.version_at(tenant, flow_id, s))

    def history(self, tenant, flow_id, limit=20):
        st = self.state(tenant, flow_id)
        if st is None:
            return None
        h = st["attempt_history"][:limit]
        return {"flow_id": flow_id, "history": h, "count": len(h)}

    def table(self, tenant, name, col=None, val=None):
        """Rows of the tenant's current projection (order: by flow_id then primary key)."""
        T = self.tenant(tenant)
        out = []
        key, cols = TABLES[name]
        for fid in sorted(T.flows, key=lambda x: x.encode()):
            st = render(T.flows[fid], self.head(), 0)
            for r in st[name]:
                if col is None or r.get(col) == val:
                    out.append(r)
        return out

    def events(self, tenant, type_=None, flow=None, run=None):
        out = []
        for e in self.log:
            if e["tenant"] != tenant:
                continue
            if type_ is not None and e["type"] != type_:
                continue
            if flow is not None and e["flow_id"] != flow:
                continue
            if run is not None and e["run_id"] != run:
                continue
            out.append({"seq": e["seq"], "ts": fmt_ts(e["ts"]), "type": e["type"],
                        "event_id": e["event_id"], "data": e["data"]})
        return out


def T_name(T, model):
    return model._cur_tenant


def _row(r, cols):
    return {c: (fmt_ts(r.get(c)) if c in TS_COLS else r.get(c)) for c in cols}


def _skey(k):
    return tuple(x.encode() if isinstance(x, str) else x for x in k)


def render(p, as_of_seq, version):
    out = {"flow_id": p["flow"]["flow_id"], "as_of_seq": as_of_seq, "version": version,
           "migration_flows": [_row(p["flow"], FLOW_COLS)]}
    runs = sorted(p["runs"].values(), key=lambda r: r["run_id"].encode())
    out["migration_runs"] = [_row(r, RUN_COLS) for r in runs]
    for name, key, cols in (("migration_iterations", "iter", ITER_COLS),
                            ("migration_patches", "patch", PATCH_COLS),
                            ("migration_sast_results", "sast", SAST_COLS),
                            ("migration_exec_results", "exec", EXEC_COLS),
                            ("migration_human_requests", "human", HUMAN_COLS)):
        out[name] = [_row(p[key][k], cols) for k in sorted(p[key], key=_skey)]
    hist = []
    for r in sorted(p["runs"].values(), key=lambda r: -r["attempt_number"]):
        rid = r["run_id"]
        dur = None
        if r["end_ts"] is not None:
            dur = (r["end_ts"] - r["start_ts"]) // 1000000
        hist.append({
            "attempt_id": rid, "attempt_number": r["attempt_number"], "flow_id": r["flow_id"],
            "job_id": r["job_id"], "job_run_id": r["job_run_id"], "status": r["status"],
            "started_at": fmt_ts(r["start_ts"]), "completed_at": fmt_ts(r["end_ts"]),
            "duration_seconds": dur, "progress_percentage": r["progress_percentage"],
            "validation_percentage": r["validation_percentage"],
            "iterations": sum(1 for k in p["iter"] if k[0] == rid),
            "generated_notebooks": sorted({k[2] for k in p["patch"] if k[0] == rid},
                                          key=lambda x: x.encode()),
            "error_message": r["error_message"], "status_message": r["status_message"],
            "triggered_by": r["triggered_by"]})
    out["attempt_history"] = hist
    return out
