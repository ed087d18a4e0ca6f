/* workload.c: the deterministic "migration-day" generator (see workload.h and
 * shared/workload.md). Every id and text is a function of (parameters, seed, position), so the
 * same unit can be regenerated anywhere without shared state. */
#include "workload.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[WL_NTYPES] = {
    [WL_FLOW_REGISTERED] = "flow_registered", [WL_RUN_STARTED] = "run_started",
    [WL_ITERATION_STEP] = "iteration_step",   [WL_PATCH] = "patch",
    [WL_SCAN_VERDICT] = "scan_verdict",       [WL_EXEC_RESULT] = "exec_result",
    [WL_HUMAN_REQUEST] = "human_request",     [WL_RUN_STATUS] = "run_status",
};

const char *wl_type_name(enum wl_type t)
{
    return (t >= 0 && t < WL_NTYPES) ? type_names[t] : "?";
}

/* splitmix64: a tiny, well-mixed deterministic hash of a 64-bit state. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A deterministic number for (seed, what, a, b). */
static uint64_t h4(uint64_t seed, uint64_t what, uint64_t a, uint64_t b)
{
    return mix64(mix64(mix64(seed ^ (what << 56)) ^ a) ^ (b * 0x2545f4914f6cdd1dull));
}

void wl_params_default(struct wl_params *p)
{
    memset(p, 0, sizeof *p);
    p->tenants = 4;
    p->flows = 250;
    p->runs = 2;
    p->iters = 3;
    p->patches = 2;
    p->findings = 400;
    p->seed = 1;
    snprintf(p->tenant_prefix, sizeof p->tenant_prefix, "bench");
}

int wl_params_check(const struct wl_params *p, char *msg, size_t cap)
{
    /* A unit must fit a batch: flow_registered, run_started, 2 steps, P patches, P scans,
     * human_request, exec_result, run_status. */
    if (p->tenants < 1 || p->tenants > 1000)
        return snprintf(msg, cap, "tenants must be 1..1000"), -1;
    if (p->flows < 1 || (int64_t)p->flows * p->tenants > 10000000)
        return snprintf(msg, cap, "flows must be >= 1 and tenants*flows <= 10M"), -1;
    if (p->runs < 1 || p->runs > 1000)
        return snprintf(msg, cap, "runs must be 1..1000"), -1;
    if (p->iters < 1 || p->iters > 100000)
        return snprintf(msg, cap, "iters must be 1..100000"), -1;
    if (p->patches < 1 || 7 + 2 * p->patches > WL_BATCH_MAX)
        return snprintf(msg, cap, "patches must be 1..%d", (WL_BATCH_MAX - 7) / 2), -1;
    if (p->findings < 0 || p->findings > 512 * 1024)
        return snprintf(msg, cap, "findings must be 0..524288 bytes"), -1;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int wl_params_opt(struct wl_params *p, const char *name, const char *val)
{
    if (strcmp(name, "tenants") == 0)
        return parse_int(val, 1, 1000, &p->tenants) ? -1 : 1;
    if (strcmp(name, "flows") == 0)
        return parse_int(val, 1, 10000000, &p->flows) ? -1 : 1;
    if (strcmp(name, "runs") == 0)
        return parse_int(val, 1, 1000, &p->runs) ? -1 : 1;
    if (strcmp(name, "iters") == 0)
        return parse_int(val, 1, 100000, &p->iters) ? -1 : 1;
    if (strcmp(name, "patches") == 0)
        return parse_int(val, 1, (WL_BATCH_MAX - 7) / 2, &p->patches) ? -1 : 1;
    if (strcmp(name, "findings") == 0)
        return parse_int(val, 0, 512 * 1024, &p->findings) ? -1 : 1;
    if (strcmp(name, "scale") == 0) {
        /* flows per tenant = 250 * scale (at least 1) */
        char *end;
        double s = strtod(val, &end);
        if (*val == '\0' || *end != '\0' || !(s > 0) || s > 40000)
            return -1;
        p->flows = (int)(250 * s + 0.5);
        if (p->flows < 1)
            p->flows = 1;
        return 1;
    }
    if (strcmp(name, "seed") == 0) {
        char *end;
        unsigned long long v = strtoull(val, &end, 10);
        if (*val == '\0' || *end != '\0')
            return -1;
        p->seed = v;
        return 1;
    }
    if (strcmp(name, "tenant-prefix") == 0) {
        size_t n = strlen(val);
        if (n < 1 || n >= sizeof p->tenant_prefix - 8)
            return -1;
        for (size_t i = 0; i < n; i++)
            if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-",
                        val[i]))
                return -1;
        memcpy(p->tenant_prefix, val, n + 1);
        return 1;
    }
    return 0;
}

const char *wl_params_usage(void)
{
    return "workload (shared/workload.md; defaults in brackets):\n"
           "  --tenants=T [4]  --flows=F per tenant [250]  --runs=R [2]  --iters=I [3]\n"
           "  --patches=P [2]  --findings=BYTES [400]  --seed=N [1]  --tenant-prefix=S [bench]\n"
           "  --scale=X        flows per tenant = 250*X (e.g. 0.2 for ~9.4k events)\n";
}

void wl_params_describe(const struct wl_params *p, char *out, size_t cap)
{
    snprintf(out, cap, "T=%d F=%d R=%d I=%d P=%d findings=%d seed=%" PRIu64 " events=%" PRIu64,
             p->tenants, p->flows, p->runs, p->iters, p->patches, p->findings, p->seed,
             wl_total_events(p));
}

int wl_run_blocked(const struct wl_params *p, int flow, int run)
{
    /* "every 10th run": runs numbered globally in generation order, the 10th, 20th, ... */
    return ((int64_t)flow * p->runs + run) % 10 == 9;
}

int wl_run_events(const struct wl_params *p, int flow, int run)
{
    return 2 + p->iters * (3 + 2 * p->patches) + wl_run_blocked(p, flow, run);
}

uint64_t wl_total_events(const struct wl_params *p)
{
    uint64_t nflows = (uint64_t)p->tenants * p->flows, runs = nflows * p->runs;
    uint64_t blocked = runs / 10; /* runs 9, 19, 29, ... of 0..runs-1 */
    return nflows + runs * (uint64_t)(2 + p->iters * (3 + 2 * p->patches)) + blocked;
}

uint64_t wl_total_units(const struct wl_params *p)
{
    return (uint64_t)p->tenants * p->flows * p->runs * p->iters;
}

void wl_tenant_name(const struct wl_params *p, int t, char *out, size_t cap)
{
    snprintf(out, cap, "%s-%d", p->tenant_prefix, t);
}

void wl_flow_id(const struct wl_params *p, int g, char *out, size_t cap)
{
    uint64_t a = h4(p->seed, 1, (uint64_t)g, 0), b = h4(p->seed, 2, (uint64_t)g, 0);
    /* a version-4 style UUID, as a flow's rootGroup id would be */
    snprintf(out, cap, "%08x-%04x-4%03x-%04x-%012" PRIx64, (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffff, (unsigned)a & 0xfff,
             0x8000 | ((unsigned)(b >> 48) & 0x3fff), (uint64_t)(b & 0xffffffffffffull));
}

int wl_owner(const struct wl_params *p, int nwriters, int g)
{
    int T = p->tenants;
    if (nwriters >= T && nwriters % T == 0) {
        int t = g / p->flows, n = g % p->flows, per = nwriters / T;
        return t + T * (n % per);
    }
    return g % nwriters;
}

int wl_writer_flows(const struct wl_params *p, int nwriters, int w)
{
    int total = p->tenants * p->flows, n = 0;
    for (int g = 0; g < total; g++)
        n += wl_owner(p, nwriters, g) == w;
    return n;
}

/* The writer's next owned flow after g, or T*F. */
static int next_owned(const struct wl_writer *it, int g)
{
    int total = it->p->tenants * it->p->flows;
    for (g++; g < total; g++)
        if (wl_owner(it->p, it->nwriters, g) == it->w)
            return g;
    return total;
}

void wl_writer_init(struct wl_writer *it, const struct wl_params *p, int nwriters, int w)
{
    memset(it, 0, sizeof *it);
    it->p = p;
    it->nwriters = nwriters;
    it->w = w;
    it->flow = next_owned(it, -1);
    it->run = 0;
    it->iter = 1;
}

int wl_writer_next(struct wl_writer *it, struct wl_batch *b)
{
    const struct wl_params *p = it->p;
    if (it->flow >= p->tenants * p->flows)
        return 0;
    wl_unit(p, it->flow, it->run, it->iter, b);
    it->units++;
    it->events += b->n;
    if (++it->iter > p->iters) {
        it->iter = 1;
        if (++it->run >= p->runs) {
            it->run = 0;
            it->flow = next_owned(it, it->flow);
        }
    }
    return 1;
}

void wl_batch_init(struct wl_batch *b)
{
    memset(b, 0, sizeof *b);
    msgpack_sbuffer_init(&b->sb);
}

void wl_batch_free(struct wl_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < WL_BATCH_MAX; i++)
        free(b->ev[i].arena);
    msgpack_sbuffer_destroy(&b->sb);
    memset(b, 0, sizeof *b);
}

/* ---- building events ---- */

/* Copy formatted text into the event's arena; returns the copy. The arena is sized up front so
 * pointers into it stay valid while the event is built. */
static const char *arena_printf(struct wl_event *e, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const char *arena_printf(struct wl_event *e, size_t *len, const char *fmt, ...)
{
    va_list ap;
    char *dst = e->arena + e->arena_used;
    size_t room = e->arena_cap - e->arena_used;
    va_start(ap, fmt);
    int n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) {
        fprintf(stderr, "workload: event arena too small\n");
        abort();
    }
    e->arena_used += (size_t)n + 1;
    if (len)
        *len = (size_t)n;
    return dst;
}

static void add_str(struct wl_event *e, const char *name, const char *s, size_t len)
{
    struct wl_field *f = &e->f[e->nfields++];
    f->name = name;
    f->is_int = 0;
    f->s = s;
    f->len = len;
    f->i = 0;
}

static void add_cstr(struct wl_event *e, const char *name, const char *s)
{
    add_str(e, name, s, strlen(s));
}

/* A formatted string field, copied into the arena. */
static void add_fmt(struct wl_event *e, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_fmt(struct wl_event *e, const char *name, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        abort();
    size_t len;
    const char *s = arena_printf(e, &len, "%s", tmp);
    add_str(e, name, s, len);
}

static void add_int(struct wl_event *e, const char *name, int64_t v)
{
    struct wl_field *f = &e->f[e->nfields++];
    f->name = name;
    f->is_int = 1;
    f->s = NULL;
    f->len = 0;
    f->i = v;
}

/* A findings_json report of about `size` bytes (exactly, when size exceeds the fixed part). */
static void add_findings(struct wl_event *e, const struct wl_params *p, int g, int r, int k, int j,
                         int blocked)
{
    char *dst = e->arena + e->arena_used;
    size_t room = e->arena_cap - e->arena_used;
    uint64_t h = h4(p->seed, 7, (uint64_t)g, (uint64_t)(r * 100000 + k * 64 + j));
    int n = snprintf(dst, room,
                     "{\"tool\":\"semgrep\",\"artifact\":\"processor_%d.py\",\"iteration\":%d,"
                     "\"verdict\":\"%s\",\"findings\":[{\"rule\":\"%s\",\"severity\":\"%s\","
                     "\"line\":%u}],\"pad\":\"",
                     j, k, blocked ? "BLOCKED" : "PASSED",
                     blocked ? "python.lang.security.audit.exec-detected"
                             : "python.lang.best-practice.open-never-closed",
                     blocked ? "HIGH" : "INFO", (unsigned)(h % 900) + 10);
    if (n < 0 || (size_t)n + 3 >= room)
        abort();
    size_t want = (size_t)p->findings;
    size_t len = (size_t)n;
    /* pad with pseudo-random letters so that the value is not trivially compressible */
    while (len + 2 < want && len + 3 < room) {
        h = mix64(h);
        dst[len++] = (char)('a' + (h % 26));
    }
    dst[len++] = '"';
    dst[len++] = '}';
    dst[len] = '\0';
    e->arena_used += len + 1;
    add_str(e, "findings_json", dst, len);
}

/* Start event i of b: type, ids, arena. */
static struct wl_event *begin(struct wl_batch *b, const struct wl_params *p, enum wl_type t, int g,
                              int r, int k, int idx_in_flow, const char *flow_id,
                              const char *run_id)
{
    if (b->n >= WL_BATCH_MAX)
        abort();
    struct wl_event *e = &b->ev[b->n++];
    size_t need = (size_t)p->findings + 4096;
    if (e->arena_cap < need) {
        free(e->arena);
        e->arena = malloc(need);
        if (!e->arena)
            abort();
        e->arena_cap = need;
    }
    e->arena_used = 0;
    e->type = t;
    e->tenant = g / p->flows;
    e->flow = g;
    e->run = r;
    e->iter = k;
    e->nfields = 0;
    snprintf(e->event_id, sizeof e->event_id, "w%" PRIu64 "-f%d-e%d", p->seed, g % p->flows,
             idx_in_flow);
    e->flow_id = arena_printf(e, NULL, "%s", flow_id);
    e->run_id = run_id ? arena_printf(e, NULL, "%s", run_id) : NULL;
    return e;
}

/* Pack event e as {"type", "event_id", "data"} at the end of b->sb. */
static void pack_event(struct wl_batch *b, size_t i)
{
    const struct wl_event *e = &b->ev[i];
    msgpack_packer pk;
    msgpack_packer_init(&pk, &b->sb, msgpack_sbuffer_write);
    b->off[i] = b->sb.size;
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "type", 4);
    const char *tn = wl_type_name(e->type);
    msgpack_pack_str_with_body(&pk, tn, strlen(tn));
    msgpack_pack_str_with_body(&pk, "event_id", 8);
    msgpack_pack_str_with_body(&pk, e->event_id, strlen(e->event_id));
    msgpack_pack_str_with_body(&pk, "data", 4);
    b->doff[i] = b->sb.size;
    msgpack_pack_map(&pk, (size_t)e->nfields);
    for (int j = 0; j < e->nfields; j++) {
        const struct wl_field *f = &e->f[j];
        msgpack_pack_str_with_body(&pk, f->name, strlen(f->name));
        if (f->is_int)
            msgpack_pack_int64(&pk, f->i);
        else
            msgpack_pack_str_with_body(&pk, f->s, f->len);
    }
    b->dlen[i] = b->sb.size - b->doff[i];
    b->len[i] = b->sb.size - b->off[i];
}

/* Index of run r's first event in flow g's stream. */
static int run_base(const struct wl_params *p, int g, int r)
{
    int idx = 1; /* flow_registered */
    for (int i = 0; i < r; i++)
        idx += wl_run_events(p, g, i);
    return idx;
}

static const char *const servers[] = {"nifi-prod-east", "nifi-prod-west", "nifi-staging"};
static const char *const priorities[] = {"P0", "P1", "P2"};

void wl_unit(const struct wl_params *p, int g, int r, int k, struct wl_batch *b)
{
    char flow_id[40], run_id[96];
    int n = g % p->flows, t = g / p->flows;
    int blocked = wl_run_blocked(p, g, r);
    int last = k == p->iters;
    struct wl_event *e;

    b->n = 0;
    msgpack_sbuffer_clear(&b->sb);
    wl_flow_id(p, g, flow_id, sizeof flow_id);
    snprintf(run_id, sizeof run_id, "%s_run_%d", flow_id, r + 1);

    if (r == 0 && k == 1) {
        e = begin(b, p, WL_FLOW_REGISTERED, g, -1, 0, 0, flow_id, NULL);
        add_cstr(e, "flow_id", e->flow_id);
        add_fmt(e, "flow_name", "flow_%d.xml", n);
        add_cstr(e, "server", servers[(n + t) % 3]);
        add_fmt(e, "nifi_xml_path", "/Volumes/main/nifi/flows/flow_%d.xml", n);
        add_fmt(e, "description", "NiFi flow %d of tenant %d: ingest, transform, publish", n, t);
        add_cstr(e, "priority", priorities[n % 3]);
        add_fmt(e, "owner", "team-%d", (int)(h4(p->seed, 3, (uint64_t)g, 0) % 7));
    }
    int idx = run_base(p, g, r);
    if (k == 1) {
        e = begin(b, p, WL_RUN_STARTED, g, r, 0, idx, flow_id, run_id);
        add_cstr(e, "run_id", e->run_id);
        add_cstr(e, "flow_id", e->flow_id);
        add_fmt(e, "job_run_id", "%" PRIu64,
                100000000 + h4(p->seed, 4, (uint64_t)g, (uint64_t)r) % 900000000);
        add_cstr(e, "status", "RUNNING");
    }
    idx += 1 + (k - 1) * (3 + 2 * p->patches);
    const char *step = k == 1 ? "generate_code" : "fix_errors";

    e = begin(b, p, WL_ITERATION_STEP, g, r, k, idx++, flow_id, run_id);
    add_cstr(e, "run_id", e->run_id);
    add_int(e, "iteration_num", k);
    add_cstr(e, "step", step);
    add_cstr(e, "step_status", "RUNNING");
    add_fmt(e, "summary", "Iteration %d: %s started", k, step);

    for (int j = 1; j <= p->patches; j++) {
        e = begin(b, p, WL_PATCH, g, r, k, idx++, flow_id, run_id);
        add_cstr(e, "run_id", e->run_id);
        add_int(e, "iteration_num", k);
        add_fmt(e, "artifact_ref", "processor_%d.py", j);
        add_cstr(e, "patch_summary", k == 1 ? "Created new processor" : "Fixed validation errors");
        add_fmt(e, "diff_ref", "git:%016" PRIx64,
                h4(p->seed, 5, (uint64_t)g, (uint64_t)(r * 100000 + k * 64 + j)));
    }

    e = begin(b, p, WL_ITERATION_STEP, g, r, k, idx++, flow_id, run_id);
    add_cstr(e, "run_id", e->run_id);
    add_int(e, "iteration_num", k);
    add_cstr(e, "step", step);
    add_cstr(e, "step_status", "COMPLETED");
    add_fmt(e, "summary", "Iteration %d: %s completed, %d artifacts", k, step, p->patches);

    for (int j = 1; j <= p->patches; j++) {
        int this_blocked = blocked && last && j == 1;
        e = begin(b, p, WL_SCAN_VERDICT, g, r, k, idx++, flow_id, run_id);
        add_cstr(e, "run_id", e->run_id);
        add_int(e, "iteration_num", k);
        add_fmt(e, "artifact_ref", "processor_%d.py", j);
        add_cstr(e, "scan_status", this_blocked ? "BLOCKED" : "PASSED");
        add_findings(e, p, g, r, k, j, this_blocked);
        if (this_blocked) {
            /* the blocked scan is followed by the request for a human */
            e = begin(b, p, WL_HUMAN_REQUEST, g, r, k, idx++, flow_id, run_id);
            add_cstr(e, "run_id", e->run_id);
            add_int(e, "iteration_num", k);
            add_cstr(e, "reason", "sast_blocked");
            add_fmt(e, "instructions",
                    "SAST blocked processor_%d.py (exec-detected); review and resolve", j);
        }
    }

    int ok = last && !blocked;
    e = begin(b, p, WL_EXEC_RESULT, g, r, k, idx++, flow_id, run_id);
    add_cstr(e, "run_id", e->run_id);
    add_int(e, "iteration_num", k);
    add_cstr(e, "job_type", "validation_job");
    add_cstr(e, "status", ok ? "SUCCESS" : "FAILED");
    add_int(e, "runtime_s",
            30 + (int64_t)(h4(p->seed, 6, (uint64_t)g, (uint64_t)(r * 100000 + k)) % 570));
    if (!ok)
        add_fmt(e, "error", "AnalysisException: row count mismatch in processor_%d (iteration %d)",
                1 + k % p->patches, k);
    add_fmt(e, "logs_ref", "/Volumes/main/logs/%s/iter_%d.log", run_id, k);

    if (last) {
        e = begin(b, p, WL_RUN_STATUS, g, r, k, idx++, flow_id, run_id);
        add_cstr(e, "run_id", e->run_id);
        add_cstr(e, "status", blocked ? "FAILED" : "SUCCESS");
        if (blocked)
            add_cstr(e, "flow_status", "NEEDS_HUMAN");
    }

    for (size_t i = 0; i < b->n; i++)
        pack_event(b, i);
}

const struct wl_field *wl_event_field(const struct wl_event *e, const char *name)
{
    for (int i = 0; i < e->nfields; i++)
        if (strcmp(e->f[i].name, name) == 0)
            return &e->f[i];
    return NULL;
}

/* ---- JSON (the CLI's input format) ---- */

struct jout {
    char *p;
    size_t cap, len;
};

static void jput(struct jout *o, const char *s, size_t n)
{
    if (o->len + n < o->cap)
        memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void jstr(struct jout *o, const char *s, size_t n)
{
    jput(o, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            jput(o, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            jput(o, esc, 6);
        } else {
            jput(o, (const char *)&s[i], 1);
        }
    }
    jput(o, "\"", 1);
}

size_t wl_event_json(const struct wl_event *e, char *out, size_t cap)
{
    struct jout o = {out, cap, 0};
    char num[32];
    const char *tn = wl_type_name(e->type);
    jput(&o, "{\"type\":", 8);
    jstr(&o, tn, strlen(tn));
    jput(&o, ",\"event_id\":", 12);
    jstr(&o, e->event_id, strlen(e->event_id));
    jput(&o, ",\"data\":{", 9);
    for (int i = 0; i < e->nfields; i++) {
        const struct wl_field *f = &e->f[i];
        if (i)
            jput(&o, ",", 1);
        jstr(&o, f->name, strlen(f->name));
        jput(&o, ":", 1);
        if (f->is_int) {
            int n = snprintf(num, sizeof num, "%" PRId64, f->i);
            jput(&o, num, (size_t)n);
        } else {
            jstr(&o, f->s, f->len);
        }
    }
    jput(&o, "}}", 2);
    if (o.len < cap)
        out[o.len] = '\0';
    return o.len;
}
