/* test_property.c: seeded random sequences of valid and invalid events over several tenants and
 * flows, with batches, groups of appends committed together, rollbacks and retried event_ids.
 * After every commit the affected flows' states are snapshotted; at the end, the state as of each
 * snapshot's seq must equal it (also after a full rebuild), the log must have no gap, and verify
 * must pass. The seed is printed and can be replayed with FLOWLOG_SEED=N. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "testutil.h"

#define NTENANTS 3
#define NFLOWS 4
#define NRUNS 12
#define STEPS 2000
#define MAX_SNAPS 4000
#define MAX_SENT 4000

static const char *tenants[NTENANTS] = {"acme:eng", "globex", "initech.ops"};

struct snap {
    int tenant, flow;
    uint64_t seq;
    char *bytes;
    size_t len;
};

struct world {
    struct fl_store *s;
    uint64_t seed, rng;
    struct snap snaps[MAX_SNAPS];
    int nsnaps;
    /* committed events with an event_id, to retry */
    char *sent[MAX_SENT];
    int sent_tenant[MAX_SENT];
    int nsent;
    uint64_t committed;
    int next_event_id;
};

static uint64_t rnd(struct world *w)
{
    /* splitmix64: small, seedable, good enough for test sequences */
    uint64_t z = (w->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int pick(struct world *w, int n)
{
    return (int)(rnd(w) % (uint64_t)n);
}

static const char *pick_s(struct world *w, const char *const *v, int n)
{
    return v[pick(w, n)];
}

/* One random event (valid or not) as a JSON object. */
static json_t *random_event(struct world *w, int *flow_out)
{
    static const char *run_st[] = {"CREATING", "QUEUED", "RUNNING", "SUCCESS", "FAILED", "CANCELLED"};
    static const char *steps[] = {"parse_xml", "generate_code", "validate", "fix_errors"};
    static const char *step_st[] = {"RUNNING", "RUNNING", "COMPLETED", "FAILED"};
    static const char *scan_st[] = {"PENDING", "SCANNING", "PASSED", "BLOCKED"};
    static const char *flow_st[] = {"NOT_STARTED", "RUNNING", "NEEDS_HUMAN", "FAILED", "DONE", "STOPPED"};
    int flow = pick(w, NFLOWS), run = pick(w, NRUNS), iter = 1 + pick(w, 3);
    char fid[32], rid[48], art[32];
    json_t *data = NULL;
    const char *type;

    snprintf(fid, sizeof fid, "flow-%d", flow);
    snprintf(rid, sizeof rid, "flow-%d_run_%d", flow, run);
    snprintf(art, sizeof art, "processor_%d.py", pick(w, 2));
    *flow_out = flow;
    switch (pick(w, 14)) {
    case 0:
        type = "flow_registered";
        data = json_pack("{s:s, s:s, s:s}", "flow_id", fid, "flow_name", "n.xml", "priority",
                         pick_s(w, (const char *[]){"P0", "P1", "P2"}, 3));
        break;
    case 1:
        type = "flow_updated";
        data = json_pack("{s:s, s:s}", "flow_id", fid, "owner", pick(w, 2) ? "pod-a" : "pod-b");
        break;
    case 2:
        type = "flow_status";
        data = json_pack("{s:s, s:s}", "flow_id", fid, "migration_status", pick_s(w, flow_st, 6));
        break;
    case 3:
    case 4:
        type = "run_started";
        data = json_pack("{s:s, s:s, s:s}", "run_id", rid, "flow_id", fid, "job_run_id", "j");
        break;
    case 5:
        type = "run_status";
        data = json_pack("{s:s, s:s, s:i}", "run_id", rid, "status", pick_s(w, run_st, 6),
                         "progress_percentage", pick(w, 101));
        break;
    case 6:
    case 7:
        type = "iteration_step";
        data = json_pack("{s:s, s:i, s:s, s:s}", "run_id", rid, "iteration_num", iter, "step",
                         pick_s(w, steps, 4), "step_status", pick_s(w, step_st, 4));
        break;
    case 8:
        type = "patch";
        data = json_pack("{s:s, s:i, s:s, s:s}", "run_id", rid, "iteration_num", iter,
                         "artifact_ref", art, "patch_summary", "p");
        break;
    case 9:
        type = "scan_verdict";
        data = json_pack("{s:s, s:i, s:s, s:s, s:s}", "run_id", rid, "iteration_num", iter,
                         "artifact_ref", art, "scan_status", pick_s(w, scan_st, 4),
                         "findings_json", pick(w, 10) ? "[]" : "{bad");
        break;
    case 10:
        type = "exec_result";
        data = json_pack("{s:s, s:i, s:s, s:s, s:i}", "run_id", rid, "iteration_num", iter,
                         "job_type", pick(w, 2) ? "flow_job" : "validation_job", "status",
                         pick(w, 2) ? "SUCCESS" : "FAILED", "runtime_s", pick(w, 100));
        break;
    case 11:
        type = "human_request";
        data = json_pack("{s:s, s:i, s:s}", "run_id", rid, "iteration_num", iter, "reason",
                         "sast_blocked");
        break;
    case 12:
        type = "human_resolution";
        data = json_pack("{s:s, s:i, s:s}", "run_id", rid, "iteration_num", iter, "status",
                         pick(w, 2) ? "RESOLVED" : "IGNORED");
        break;
    default:
        type = "flow_rollback";
        data = json_pack("{s:s, s:I, s:s}", "flow_id", fid, "to_seq",
                         (json_int_t)(1 + (w->committed ? rnd(w) % (w->committed + 2) : 0)),
                         "reason", "property");
        break;
    }
    json_t *ev = json_pack("{s:s, s:o}", "type", type, "data", data);
    if (pick(w, 3) == 0) {
        char eid[32];
        snprintf(eid, sizeof eid, "e-%d", w->next_event_id++);
        json_object_set_new(ev, "event_id", json_string(eid));
    }
    return ev;
}

static void snapshot(struct world *w, int tenant, int flow)
{
    struct snap *sn;
    char fid[32];
    int rc;

    if (w->nsnaps >= MAX_SNAPS)
        return;
    snprintf(fid, sizeof fid, "flow-%d", flow);
    sn = &w->snaps[w->nsnaps];
    sn->bytes = tu_state_raw(w->s, tenants[tenant], fid, 0, &sn->len, &rc);
    if (rc != 0) { /* not registered yet */
        free(sn->bytes);
        return;
    }
    sn->tenant = tenant;
    sn->flow = flow;
    sn->seq = fl_store_head(w->s);
    w->nsnaps++;
}

static void check_snapshots(struct world *w, const char *when)
{
    for (int i = 0; i < w->nsnaps; i++) {
        struct snap *sn = &w->snaps[i];
        char fid[32];
        size_t len;
        int rc;
        snprintf(fid, sizeof fid, "flow-%d", sn->flow);
        char *now = tu_state_raw(w->s, tenants[sn->tenant], fid, sn->seq, &len, &rc);
        if (rc != 0 || len != sn->len || memcmp(now, sn->bytes, len) != 0)
            fail_msg("seed %llu: %s: state of %s/%s as of seq %llu differs from its snapshot",
                     (unsigned long long)w->seed, when, tenants[sn->tenant], fid,
                     (unsigned long long)sn->seq);
        free(now);
    }
}

/* Whether every event of the JSON array text passes the form checks. */
static int parses(const char *text)
{
    json_t *arr = json_loads(text, 0, NULL);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked up;
    struct fl_error e;
    size_t off = 0;
    int ok = arr != NULL;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&up);
    if (ok) {
        tu_pack_json(&pk, arr);
        ok = msgpack_unpack_next(&up, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS;
    }
    for (uint32_t k = 0; ok && k < up.data.via.array.size; k++) {
        struct fl_event ev;
        ok = fl_event_parse(&up.data.via.array.ptr[k], NULL, &ev, &e) == 0;
        if (ok)
            fl_event_free(&ev);
    }
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    json_decref(arr);
    return ok;
}

/* Several appends committed as one group, as flowlogd's commit thread does: each has its own
 * outcome, and one refused (at its first event, or after writing: the group is redone) must
 * not change what the others do or leave (their versions, names and numbers). Appends refused
 * for their form never reach a group in flowlogd, so they are left out. Event ids here are
 * always new, so no append is a duplicate. */
static void group_step(struct world *w)
{
    enum { G = 6, PER = 3 };
    const char *texts[G], *tn[G];
    char *owned[G];
    int tenant[G], flows[G][PER], nev[G], codes[G];
    uint64_t seqs[G], before = fl_store_head(w->s);
    size_t n = 0;
    int want = 2 + pick(w, G - 1);

    for (int k = 0; k < want; k++) {
        json_t *arr = json_array();
        int ne = 1 + (pick(w, 4) == 0 ? pick(w, PER) : 0);
        for (int i = 0; i < ne; i++)
            json_array_append_new(arr, random_event(w, &flows[n][i]));
        owned[n] = json_dumps(arr, JSON_COMPACT);
        json_decref(arr);
        if (!parses(owned[n])) {
            free(owned[n]);
            continue;
        }
        tenant[n] = pick(w, NTENANTS);
        tn[n] = tenants[tenant[n]];
        texts[n] = owned[n];
        nev[n++] = ne;
    }
    if (n > 0)
        tu_commit_group(w->s, n, tn, texts, codes, seqs);
    for (size_t i = 0; i < n; i++) {
        if (codes[i] == 0) {
            json_t *arr = json_loads(owned[i], 0, NULL);
            w->committed += (uint64_t)nev[i];
            for (int k = 0; k < nev[i]; k++) {
                json_t *ev = json_array_get(arr, (size_t)k);
                if (json_object_get(ev, "event_id") && w->nsent < MAX_SENT) {
                    w->sent[w->nsent] = json_dumps(ev, JSON_COMPACT);
                    w->sent_tenant[w->nsent++] = tenant[i];
                }
                snapshot(w, tenant[i], flows[i][k]);
            }
            json_decref(arr);
        }
        free(owned[i]);
    }
    if (fl_store_head(w->s) != w->committed)
        fail_msg("seed %llu: head %llu (%llu before the group) but %llu events committed",
                 (unsigned long long)w->seed, (unsigned long long)fl_store_head(w->s),
                 (unsigned long long)before, (unsigned long long)w->committed);
}

static void one_step(struct world *w)
{
    int tenant = pick(w, NTENANTS), flows[3], n;
    json_t *arr = json_array();
    struct fl_error e;
    struct fl_ack acks[3];
    char *text;
    int rc;

    if (w->nsent && pick(w, 8) == 0) {
        /* retry an earlier event: a duplicate in its tenant, unless mutated */
        int k = pick(w, w->nsent);
        json_t *ev = json_loads(w->sent[k], 0, NULL);
        int mutate = pick(w, 3) == 0;
        if (mutate) {
            /* same event_id, other (well-formed) content */
            json_t *other = json_pack("{s:s, s:{s:s, s:s}, s:O}", "type", "flow_status", "data",
                                      "flow_id", "flow-0", "migration_status", "DONE",
                                      "event_id", json_object_get(ev, "event_id"));
            if (json_equal(other, ev))
                mutate = 0;
            json_decref(ev);
            ev = other;
        }
        text = json_dumps(ev, JSON_COMPACT);
        rc = tu_append(w->s, tenants[w->sent_tenant[k]], text, acks, 1, &e);
        if (mutate && rc != FL_EIDEMPOTENCY_MISMATCH)
            fail_msg("seed %llu: mutated retry gave %s", (unsigned long long)w->seed,
                     fl_err_name(rc));
        if (!mutate && (rc != 0 || !acks[0].duplicate))
            fail_msg("seed %llu: retry was not a duplicate (%s)", (unsigned long long)w->seed,
                     fl_err_name(rc));
        free(text);
        json_decref(ev);
        json_decref(arr);
        return;
    }
    n = 1 + (pick(w, 4) == 0 ? pick(w, 3) : 0);
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, random_event(w, &flows[i]));
    text = json_dumps(arr, JSON_COMPACT);
    uint64_t before = fl_store_head(w->s);
    rc = tu_append(w->s, tenants[tenant], text, acks, 3, &e);
    if (rc == 0) {
        for (int i = 0; i < n; i++) {
            json_t *ev = json_array_get(arr, i);
            if (!acks[i].duplicate)
                w->committed++;
            if (json_object_get(ev, "event_id") && w->nsent < MAX_SENT && !acks[i].duplicate) {
                w->sent[w->nsent] = json_dumps(ev, JSON_COMPACT);
                w->sent_tenant[w->nsent++] = tenant;
            }
        }
        for (int i = 0; i < n; i++)
            snapshot(w, tenant, flows[i]);
    } else if (fl_store_head(w->s) != before) {
        fail_msg("seed %llu: a failed append (%s) moved the head", (unsigned long long)w->seed,
                 e.msg);
    }
    if (fl_store_head(w->s) != w->committed)
        fail_msg("seed %llu: head %llu but %llu events committed", (unsigned long long)w->seed,
                 (unsigned long long)fl_store_head(w->s), (unsigned long long)w->committed);
    free(text);
    json_decref(arr);
}

static void run_seed(uint64_t seed)
{
    struct world *w = calloc(1, sizeof *w);
    char *dir = tu_tmpdir();
    struct fl_error e;
    uint64_t n;

    printf("# property test seed %llu (replay with FLOWLOG_SEED=%llu)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    w->seed = w->rng = seed;
    w->s = tu_open(dir, 0);
    /* make sure each tenant has flows, so that most random events address something */
    for (int t = 0; t < NTENANTS; t++)
        for (int f = 0; f < NFLOWS; f++) {
            assert_int_equal(tu_appendf(w->s, tenants[t], &e,
                                        "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"flow-%d\",\"flow_name\":\"x\"}}",
                                        f), 0);
            w->committed++;
            snapshot(w, t, f);
        }
    for (int i = 0; i < STEPS; i++) {
        if (pick(w, 4) == 0)
            group_step(w);
        else
            one_step(w);
    }
    check_snapshots(w, "live");
    json_t *v = tu_verify(w->s);
    if (!json_is_true(json_object_get(v, "ok")))
        fail_msg("seed %llu: verify failed: %s", (unsigned long long)seed,
                 json_dumps(json_object_get(v, "problems"), 0));
    json_decref(v);
    /* the log has every seq once, in order */
    struct fl_log_filter lf = {.type = -1, .max_bytes = 64 << 20};
    json_t *l = tu_log(w->s, tenants[0], &lf, &e);
    uint64_t prev = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(json_object_get(l, "events"), i, ev) {
        uint64_t seq = (uint64_t)json_integer_value(json_object_get(ev, "seq"));
        assert_true(seq > prev);
        prev = seq;
    }
    json_decref(l);
    /* the sequence must have exercised rollbacks and duplicates, or it proves little */
    size_t rollbacks = 0;
    for (int t = 0; t < NTENANTS; t++) {
        struct fl_log_filter rf = {.type = FL_EV_FLOW_ROLLBACK, .max_bytes = 64 << 20};
        json_t *rl = tu_log(w->s, tenants[t], &rf, &e);
        rollbacks += json_array_size(json_object_get(rl, "events"));
        json_decref(rl);
    }
    if (rollbacks < 5)
        fail_msg("seed %llu: only %zu rollbacks committed", (unsigned long long)seed, rollbacks);
    assert_int_equal(fl_store_rebuild(w->s, &n, &e), 0);
    assert_int_equal(n, fl_store_head(w->s));
    check_snapshots(w, "after rebuild");
    /* the rebuild trusts the log (it skips the checks a replayed event passed when appended);
     * verify's scratch rebuild checks every event again, and must find the same projections */
    v = tu_verify(w->s);
    if (!json_is_true(json_object_get(v, "ok")))
        fail_msg("seed %llu: verify after the rebuild failed: %s", (unsigned long long)seed,
                 json_dumps(json_object_get(v, "problems"), 0));
    json_decref(v);
    printf("# seed %llu: %llu events committed (%zu rollbacks), %d snapshots checked\n",
           (unsigned long long)seed, (unsigned long long)w->committed, rollbacks, w->nsnaps);
    for (int k = 0; k < w->nsnaps; k++)
        free(w->snaps[k].bytes);
    for (int k = 0; k < w->nsent; k++)
        free(w->sent[k]);
    fl_store_close(w->s);
    tu_rmdir(dir);
    free(dir);
    free(w);
}

static void test_random_sequences(void **state)
{
    const char *env = getenv("FLOWLOG_SEED");
    (void)state;
    if (env) {
        run_seed(strtoull(env, NULL, 10));
        return;
    }
    uint64_t base = (uint64_t)time(NULL);
    for (int i = 0; i < 4; i++)
        run_seed(base * 16 + (uint64_t)i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_random_sequences)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
