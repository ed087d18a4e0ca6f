/* pg-bench: the migration-day workload against PostgreSQL, applied the way seed 000/001's
 * application would, so that its figures compare with flowlog's.
 *
 * Schema: the seven tables of seed 000 plus seed 001's attempt history (nifi_conversion_history),
 * each keyed as in the seeds with a tenant column in front, the seed's indexes, and an
 * append-only `events` table (bigserial seq, unique (tenant, event_id), per-flow and per-run
 * indexes, the msgpack event as bytea) written in the same transaction: the log and the
 * projections commit together, as in flowlog.
 *
 * Each event is one INSERT into events plus one statement on the projections (upserts with the
 * seed's keys; forward-only status guards; flows.last_update_ts set). One transaction per event
 * in step mode, one per unit (iteration) in batch mode. Each transaction is sent in libpq
 * pipeline mode (BEGIN, statements, COMMIT, Sync: one round trip) and acknowledged when COMMIT
 * returns, with synchronous_commit = on (WAL flushed before the reply). One thread and one
 * blocking connection per writer. */
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchutil.h"
#include "workload.h"

static const char usage[] =
    "usage: pg-bench --conninfo='host=127.0.0.1 port=5432 dbname=bench user=...' [options]\n"
    "  Runs the migration-day workload against PostgreSQL (synchronous_commit=on).\n"
    "  --conninfo=S   libpq connection string [env PGBENCH_CONNINFO, else libpq defaults]\n"
    "  --no-setup     keep an existing schema (default: drop and create the tables)\n";

struct pg_cfg {
    const char *conninfo;
    int setup;
    const struct wl_params *p;
};

static const char *const schema_sql =
    "DROP TABLE IF EXISTS events, migration_flows, migration_runs, migration_iterations,"
    " migration_patches, migration_sast_results, migration_exec_results,"
    " migration_human_requests, nifi_conversion_history CASCADE;"
    "CREATE TABLE events (seq bigserial PRIMARY KEY, tenant text NOT NULL,"
    " ts timestamptz NOT NULL DEFAULT clock_timestamp(), type text NOT NULL, event_id text,"
    " flow_id text NOT NULL, run_id text, data bytea NOT NULL);"
    "CREATE UNIQUE INDEX events_event_id ON events (tenant, event_id);"
    "CREATE INDEX events_flow ON events (tenant, flow_id, seq);"
    "CREATE INDEX events_run ON events (tenant, run_id, seq) WHERE run_id IS NOT NULL;"
    "CREATE TABLE migration_flows (tenant text NOT NULL, flow_id text NOT NULL,"
    " flow_name text NOT NULL, migration_status text NOT NULL, current_run_id text,"
    " last_update_ts timestamptz, server text, nifi_xml_path text, description text,"
    " priority text, owner text, current_attempt_id text,"
    " total_attempts int NOT NULL DEFAULT 0, successful_conversions int NOT NULL DEFAULT 0,"
    " first_attempt_at timestamptz, last_attempt_at timestamptz,"
    " PRIMARY KEY (tenant, flow_id));"
    "CREATE INDEX ON migration_flows (tenant, flow_name);"
    "CREATE INDEX ON migration_flows (tenant, migration_status);"
    "CREATE TABLE migration_runs (tenant text NOT NULL, run_id text NOT NULL,"
    " flow_id text NOT NULL, job_run_id text, start_ts timestamptz, end_ts timestamptz,"
    " status text NOT NULL, PRIMARY KEY (tenant, run_id));"
    "CREATE INDEX ON migration_runs (tenant, flow_id);"
    "CREATE INDEX ON migration_runs (tenant, job_run_id);"
    "CREATE INDEX ON migration_runs (tenant, status);"
    "CREATE TABLE migration_iterations (tenant text NOT NULL, run_id text NOT NULL,"
    " iteration_num int NOT NULL, step text NOT NULL, step_status text NOT NULL,"
    " ts timestamptz, summary text, error text, PRIMARY KEY (tenant, run_id, iteration_num));"
    "CREATE INDEX ON migration_iterations (tenant, run_id);"
    "CREATE INDEX ON migration_iterations (tenant, step);"
    "CREATE TABLE migration_patches (tenant text NOT NULL, run_id text NOT NULL,"
    " iteration_num int NOT NULL, artifact_ref text NOT NULL, patch_summary text,"
    " diff_ref text, ts timestamptz, PRIMARY KEY (tenant, run_id, iteration_num, artifact_ref));"
    "CREATE TABLE migration_sast_results (tenant text NOT NULL, run_id text NOT NULL,"
    " iteration_num int NOT NULL, artifact_ref text NOT NULL, scan_status text NOT NULL,"
    " findings_json text, ts timestamptz,"
    " PRIMARY KEY (tenant, run_id, iteration_num, artifact_ref));"
    "CREATE TABLE migration_exec_results (tenant text NOT NULL, run_id text NOT NULL,"
    " iteration_num int NOT NULL, job_type text NOT NULL, status text NOT NULL,"
    " runtime_s int, error text, logs_ref text, ts timestamptz,"
    " PRIMARY KEY (tenant, run_id, iteration_num, job_type));"
    "CREATE TABLE migration_human_requests (tenant text NOT NULL, run_id text NOT NULL,"
    " iteration_num int NOT NULL, reason text NOT NULL, status text NOT NULL,"
    " instructions text, ts timestamptz, PRIMARY KEY (tenant, run_id, iteration_num));"
    "CREATE TABLE nifi_conversion_history (tenant text NOT NULL, attempt_id text NOT NULL,"
    " flow_id text NOT NULL, databricks_job_id text, databricks_run_id text, job_name text,"
    " status text NOT NULL, started_at timestamptz NOT NULL, completed_at timestamptz,"
    " duration_seconds int, progress_percentage int, iterations int,"
    " validation_percentage int, generated_notebooks text[], error_message text,"
    " status_message text, attempt_number int, triggered_by text,"
    " PRIMARY KEY (tenant, attempt_id));"
    "CREATE INDEX ON nifi_conversion_history (tenant, flow_id, attempt_number);";

static const char *const truncate_sql =
    "TRUNCATE events, migration_flows, migration_runs, migration_iterations, migration_patches,"
    " migration_sast_results, migration_exec_results, migration_human_requests,"
    " nifi_conversion_history RESTART IDENTITY";

/* (laid out by hand: the SQL reads better that way) */
/* clang-format off */
/* Prepared statements: name, SQL, number of parameters. $1 is always the tenant. Each
 * projection statement also sets the flow's last_update_ts, as every flowlog event does. */
enum { S_BEGIN, S_COMMIT, S_EVENT, S_FLOW_REG, S_RUN_START, S_RUN_STATUS, S_ITER, S_PATCH, S_SCAN,
       S_EXEC, S_HUMAN, S_COUNT };
static const struct {
    const char *name, *sql;
    int nparams;
} stmts[S_COUNT] = {
    [S_BEGIN] = {"begin", "BEGIN", 0},
    [S_COMMIT] = {"commit", "COMMIT", 0},
    [S_EVENT] = {"ev", "INSERT INTO events (tenant, type, event_id, flow_id, run_id, data)"
                       " VALUES ($1, $2, $3, $4, $5, $6)", 6},
    [S_FLOW_REG] = {"flow_reg",
        "INSERT INTO migration_flows (tenant, flow_id, flow_name, migration_status,"
        " last_update_ts, server, nifi_xml_path, description, priority, owner)"
        " VALUES ($1, $2, $3, 'NOT_STARTED', now(), $4, $5, $6, $7, $8)", 8},
    /* $2 run_id $3 flow_id $4 job_run_id $5 status */
    [S_RUN_START] = {"run_start",
        "WITH f AS (UPDATE migration_flows SET current_run_id = $2, current_attempt_id = $2,"
        "  migration_status = 'RUNNING', total_attempts = total_attempts + 1,"
        "  first_attempt_at = COALESCE(first_attempt_at, now()), last_attempt_at = now(),"
        "  last_update_ts = now() WHERE tenant = $1 AND flow_id = $3 RETURNING total_attempts),"
        " r AS (INSERT INTO migration_runs (tenant, run_id, flow_id, job_run_id, start_ts, status)"
        "  SELECT $1, $2, $3, $4, now(), $5 FROM f)"
        " INSERT INTO nifi_conversion_history (tenant, attempt_id, flow_id, databricks_run_id,"
        "  status, started_at, attempt_number) SELECT $1, $2, $3, $4, $5, now(), total_attempts"
        "  FROM f", 5},
    /* $2 run_id $3 flow_id $4 status $5 flow status after a terminal status (or NULL)
     * $6 error_message */
    [S_RUN_STATUS] = {"run_status",
        "WITH r AS (UPDATE migration_runs SET status = $4,"
        "  end_ts = CASE WHEN $4 IN ('SUCCESS','FAILED','CANCELLED') THEN now() END"
        "  WHERE tenant = $1 AND run_id = $2"
        "  AND status NOT IN ('SUCCESS','FAILED','CANCELLED') RETURNING flow_id),"
        " h AS (UPDATE nifi_conversion_history SET status = $4,"
        "  completed_at = CASE WHEN $4 IN ('SUCCESS','FAILED','CANCELLED') THEN now() END,"
        "  duration_seconds = CASE WHEN $4 IN ('SUCCESS','FAILED','CANCELLED')"
        "   THEN extract(epoch FROM now() - started_at)::int END,"
        "  error_message = COALESCE($6, error_message)"
        "  WHERE tenant = $1 AND attempt_id = $2 AND EXISTS (SELECT 1 FROM r))"
        " UPDATE migration_flows f SET last_update_ts = now(),"
        "  migration_status = CASE WHEN f.current_run_id = $2 AND $5::text IS NOT NULL"
        "   THEN $5 ELSE f.migration_status END,"
        "  successful_conversions = f.successful_conversions + ($4 = 'SUCCESS')::int"
        " FROM r WHERE f.tenant = $1 AND f.flow_id = $3 AND r.flow_id = $3", 6},
    /* $2 run_id $3 flow_id $4 iteration_num $5 step $6 step_status $7 summary */
    [S_ITER] = {"iter",
        "WITH x AS (INSERT INTO migration_iterations (tenant, run_id, iteration_num, step,"
        "  step_status, ts, summary) VALUES ($1, $2, $4, $5, $6, now(), $7)"
        "  ON CONFLICT (tenant, run_id, iteration_num) DO UPDATE SET step = EXCLUDED.step,"
        "  step_status = EXCLUDED.step_status, ts = EXCLUDED.ts, summary = EXCLUDED.summary"
        "  WHERE migration_iterations.step_status = 'RUNNING')"
        " UPDATE migration_flows SET last_update_ts = now() WHERE tenant = $1 AND flow_id = $3",
        7},
    /* $2 run_id $3 flow_id $4 iteration_num $5 artifact_ref $6 patch_summary $7 diff_ref */
    [S_PATCH] = {"patch",
        "WITH x AS (INSERT INTO migration_patches (tenant, run_id, iteration_num, artifact_ref,"
        "  patch_summary, diff_ref, ts) VALUES ($1, $2, $4, $5, $6, $7, now())"
        "  ON CONFLICT (tenant, run_id, iteration_num, artifact_ref) DO UPDATE SET"
        "  patch_summary = EXCLUDED.patch_summary, diff_ref = EXCLUDED.diff_ref, ts = EXCLUDED.ts)"
        " UPDATE migration_flows SET last_update_ts = now() WHERE tenant = $1 AND flow_id = $3",
        7},
    /* $2 run_id $3 flow_id $4 iteration_num $5 artifact_ref $6 scan_status $7 findings_json */
    [S_SCAN] = {"scan",
        "WITH x AS (INSERT INTO migration_sast_results (tenant, run_id, iteration_num,"
        "  artifact_ref, scan_status, findings_json, ts) VALUES ($1, $2, $4, $5, $6, $7, now())"
        "  ON CONFLICT (tenant, run_id, iteration_num, artifact_ref) DO UPDATE SET"
        "  scan_status = EXCLUDED.scan_status, findings_json = EXCLUDED.findings_json,"
        "  ts = EXCLUDED.ts WHERE migration_sast_results.scan_status IN ('PENDING','SCANNING'))"
        " UPDATE migration_flows SET last_update_ts = now() WHERE tenant = $1 AND flow_id = $3",
        7},
    /* $2 run_id $3 flow_id $4 iteration_num $5 job_type $6 status $7 runtime_s $8 error
     * $9 logs_ref */
    [S_EXEC] = {"exec",
        "WITH x AS (INSERT INTO migration_exec_results (tenant, run_id, iteration_num, job_type,"
        "  status, runtime_s, error, logs_ref, ts) VALUES ($1, $2, $4, $5, $6, $7, $8, $9, now()))"
        " UPDATE migration_flows SET last_update_ts = now() WHERE tenant = $1 AND flow_id = $3",
        9},
    /* $2 run_id $3 flow_id $4 iteration_num $5 reason $6 instructions */
    [S_HUMAN] = {"human",
        "WITH x AS (INSERT INTO migration_human_requests (tenant, run_id, iteration_num, reason,"
        "  status, instructions, ts) VALUES ($1, $2, $4, $5, 'PENDING', $6, now()))"
        " UPDATE migration_flows SET last_update_ts = now() WHERE tenant = $1 AND flow_id = $3",
        6},
};
/* clang-format on */

struct pg_conn {
    PGconn *c;
    const struct wl_params *p;
    char tenants[1000][40];
    int nq, ends; /* queries of the append in flight, and the ends of their results read */
    int bad;      /* one of them failed (why says how) */
    char why[BU_ERR];
};

static int exec_simple(PGconn *c, const char *sql, char *err)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok && err)
        snprintf(err, BU_ERR, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

static PGconn *pg_open(const struct pg_cfg *cfg, char *err)
{
    PGconn *c = PQconnectdb(cfg->conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, BU_ERR, "connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    /* durable acknowledgements: the COMMIT reply comes after the WAL flush */
    if (exec_simple(c, "SET synchronous_commit = on", err) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static void *pg_connect(void *vcfg, int w, int nwriters, char *err)
{
    struct pg_cfg *cfg = vcfg;
    (void)w;
    (void)nwriters;
    struct pg_conn *pc = calloc(1, sizeof *pc);
    if (!pc)
        return NULL;
    if (!(pc->c = pg_open(cfg, err))) {
        free(pc);
        return NULL;
    }
    pc->p = cfg->p;
    for (int t = 0; t < cfg->p->tenants && t < 1000; t++)
        wl_tenant_name(cfg->p, t, pc->tenants[t], sizeof pc->tenants[t]);
    for (int i = 0; i < S_COUNT; i++) {
        PGresult *r = PQprepare(pc->c, stmts[i].name, stmts[i].sql, stmts[i].nparams, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            snprintf(err, BU_ERR, "prepare %s: %s", stmts[i].name, PQresultErrorMessage(r));
            PQclear(r);
            PQfinish(pc->c);
            free(pc);
            return NULL;
        }
        PQclear(r);
    }
    if (PQenterPipelineMode(pc->c) != 1) {
        snprintf(err, BU_ERR, "pipeline mode: %s", PQerrorMessage(pc->c));
        PQfinish(pc->c);
        free(pc);
        return NULL;
    }
    return pc;
}

static void pg_close(void *vc)
{
    struct pg_conn *pc = vc;
    if (!pc)
        return;
    PQfinish(pc->c);
    free(pc);
}

/* A field's value as text (ints are formatted into buf), or NULL. */
static const char *fval(const struct wl_event *e, const char *name, char *buf, size_t cap)
{
    const struct wl_field *f = wl_event_field(e, name);
    if (!f)
        return NULL;
    if (f->is_int) {
        snprintf(buf, cap, "%" PRId64, f->i);
        return buf;
    }
    return f->s; /* NUL-terminated in the arena */
}

static int send_stmt(PGconn *c, int s, int n, const char *const *v, const int *len, const int *fmt,
                     char *err)
{
    if (PQsendQueryPrepared(c, stmts[s].name, n, v, len, fmt, 0) != 1) {
        snprintf(err, BU_ERR, "send %s: %s", stmts[s].name, PQerrorMessage(c));
        return -1;
    }
    return 0;
}

/* Queue the two statements of event i of b. */
static int send_event(struct pg_conn *pc, const struct wl_batch *b, size_t i, char *err)
{
    const struct wl_event *e = &b->ev[i];
    const char *tenant = pc->tenants[e->tenant];
    char n1[32], n2[32];
    const char *v[10];
    int len[10] = {0}, fmt[10] = {0};
    int s;

    /* the log: the packed event as it would travel on flowlog's wire */
    v[0] = tenant;
    v[1] = wl_type_name(e->type);
    v[2] = e->event_id;
    v[3] = e->flow_id;
    v[4] = e->run_id;
    v[5] = b->sb.data + b->off[i];
    len[5] = (int)b->len[i];
    fmt[5] = 1;
    if (send_stmt(pc->c, S_EVENT, 6, v, len, fmt, err) != 0)
        return -1;
    memset(fmt, 0, sizeof fmt);
    v[0] = tenant;
    switch (e->type) {
    case WL_FLOW_REGISTERED:
        s = S_FLOW_REG;
        v[1] = e->flow_id;
        v[2] = fval(e, "flow_name", n1, sizeof n1);
        v[3] = fval(e, "server", n1, sizeof n1);
        v[4] = fval(e, "nifi_xml_path", n1, sizeof n1);
        v[5] = fval(e, "description", n1, sizeof n1);
        v[6] = fval(e, "priority", n1, sizeof n1);
        v[7] = fval(e, "owner", n1, sizeof n1);
        break;
    case WL_RUN_STARTED:
        s = S_RUN_START;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "job_run_id", n1, sizeof n1);
        v[4] = fval(e, "status", n1, sizeof n1);
        break;
    case WL_RUN_STATUS: {
        s = S_RUN_STATUS;
        const char *st = fval(e, "status", n1, sizeof n1);
        const char *fs = fval(e, "flow_status", n2, sizeof n2);
        if (!fs)
            fs = strcmp(st, "SUCCESS") == 0     ? "DONE"
                 : strcmp(st, "FAILED") == 0    ? "FAILED"
                 : strcmp(st, "CANCELLED") == 0 ? "STOPPED"
                                                : NULL;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = st;
        v[4] = fs;
        v[5] = fval(e, "error_message", n1, sizeof n1);
        break;
    }
    case WL_ITERATION_STEP:
        s = S_ITER;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "iteration_num", n1, sizeof n1);
        v[4] = fval(e, "step", n2, sizeof n2);
        v[5] = fval(e, "step_status", n2, sizeof n2);
        v[6] = fval(e, "summary", n2, sizeof n2);
        break;
    case WL_PATCH:
        s = S_PATCH;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "iteration_num", n1, sizeof n1);
        v[4] = fval(e, "artifact_ref", n2, sizeof n2);
        v[5] = fval(e, "patch_summary", n2, sizeof n2);
        v[6] = fval(e, "diff_ref", n2, sizeof n2);
        break;
    case WL_SCAN_VERDICT:
        s = S_SCAN;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "iteration_num", n1, sizeof n1);
        v[4] = fval(e, "artifact_ref", n2, sizeof n2);
        v[5] = fval(e, "scan_status", n2, sizeof n2);
        v[6] = fval(e, "findings_json", n2, sizeof n2);
        break;
    case WL_EXEC_RESULT:
        s = S_EXEC;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "iteration_num", n1, sizeof n1);
        v[4] = fval(e, "job_type", n2, sizeof n2);
        v[5] = fval(e, "status", n2, sizeof n2);
        v[6] = fval(e, "runtime_s", n2, sizeof n2);
        v[7] = fval(e, "error", n2, sizeof n2);
        v[8] = fval(e, "logs_ref", n2, sizeof n2);
        break;
    case WL_HUMAN_REQUEST:
        s = S_HUMAN;
        v[1] = e->run_id;
        v[2] = e->flow_id;
        v[3] = fval(e, "iteration_num", n1, sizeof n1);
        v[4] = fval(e, "reason", n2, sizeof n2);
        v[5] = fval(e, "instructions", n2, sizeof n2);
        break;
    default:
        snprintf(err, BU_ERR, "unexpected event type");
        return -1;
    }
    /* fval's int buffers: iteration_num and runtime_s are the only ints and never share one */
    return send_stmt(pc->c, s, stmts[s].nparams, v, len, fmt, err);
}

/* Send BEGIN, the events' statements, COMMIT and a Sync, and flush them; pg_recv reads the
 * results. */
static int pg_send(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct pg_conn *pc = vc;
    PGconn *c = pc->c;

    pc->nq = 0;
    pc->ends = 0;
    pc->bad = 0;
    pc->why[0] = '\0';
    if (send_stmt(c, S_BEGIN, 0, NULL, NULL, NULL, err) != 0)
        return -1;
    pc->nq++;
    for (size_t i = from; i < to; i++) {
        if (send_event(pc, b, i, err) != 0)
            return -1;
        pc->nq += 2;
    }
    if (send_stmt(c, S_COMMIT, 0, NULL, NULL, NULL, err) != 0 || PQpipelineSync(c) != 1 ||
        PQflush(c) != 0) /* a blocking connection: flushes all */
        return snprintf(err, BU_ERR, "send: %s", PQerrorMessage(c)), -1;
    pc->nq++;
    return 0;
}

static int pg_fd(void *vc)
{
    return PQsocket(((struct pg_conn *)vc)->c);
}

/* Each query gives its result(s), then NULL; the Sync then gives PGRES_PIPELINE_SYNC. */
static int pg_recv(void *vc, const struct wl_batch *b, size_t from, size_t to, char *err)
{
    struct pg_conn *pc = vc;
    PGconn *c = pc->c;
    (void)b, (void)from, (void)to;

    if (PQconsumeInput(c) != 1)
        return snprintf(err, BU_ERR, "connection: %s", PQerrorMessage(c)), -1;
    while (!PQisBusy(c)) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (++pc->ends > pc->nq)
                return snprintf(err, BU_ERR, "no pipeline sync: %s", PQerrorMessage(c)), -1;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (pc->ends != pc->nq && !pc->bad) {
                pc->bad = 1;
                snprintf(pc->why, sizeof pc->why, "a sync after %d of %d queries", pc->ends,
                         pc->nq);
            }
            if (pc->bad)
                return snprintf(err, BU_ERR, "%s", pc->why[0] ? pc->why : "transaction aborted"),
                       -1;
            return 1;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!pc->bad && st != PGRES_PIPELINE_ABORTED)
                snprintf(pc->why, sizeof pc->why, "%s", PQresultErrorMessage(r));
            pc->bad = 1;
        }
        PQclear(r);
    }
    return 0;
}

static int pg_reset(void *vcfg, const struct wl_params *p, char *err)
{
    struct pg_cfg *cfg = vcfg;
    (void)p;
    PGconn *c = pg_open(cfg, err);
    if (!c)
        return -1;
    int rc = exec_simple(c, truncate_sql, err);
    if (rc == 0)
        rc = exec_simple(c, "CHECKPOINT", err); /* start each run with a clean WAL position */
    PQfinish(c);
    return rc;
}

/* SELECT returning one integer. */
static int64_t q_int(PGconn *c, const char *sql, char *err)
{
    PGresult *r = PQexec(c, sql);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    else
        snprintf(err, BU_ERR, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}

/* After a complete run: every event is in the log, every flow ended as the workload says. */
static int pg_verify(void *vcfg, const struct wl_params *p, int nwriters, char *err)
{
    struct pg_cfg *cfg = vcfg;
    (void)nwriters;
    PGconn *c = pg_open(cfg, err);
    if (!c)
        return -1;
    int64_t flows = (int64_t)p->tenants * p->flows, runs = flows * p->runs, needs = 0, succ = 0;
    for (int g = 0; g < flows; g++) {
        needs += wl_run_blocked(p, g, p->runs - 1);
        for (int r = 0; r < p->runs; r++)
            succ += !wl_run_blocked(p, g, r);
    }
    struct {
        const char *sql;
        int64_t want;
    } checks[] = {
        {"SELECT count(*) FROM events", (int64_t)wl_total_events(p)},
        {"SELECT count(DISTINCT seq) FROM events", (int64_t)wl_total_events(p)},
        {"SELECT count(*) FROM migration_flows", flows},
        {"SELECT count(*) FROM migration_flows WHERE migration_status = 'NEEDS_HUMAN'", needs},
        {"SELECT count(*) FROM migration_flows WHERE migration_status = 'DONE'", flows - needs},
        {"SELECT coalesce(sum(successful_conversions), 0) FROM migration_flows", succ},
        {"SELECT count(*) FROM migration_flows WHERE total_attempts <> (SELECT count(*) FROM"
         " migration_runs r WHERE r.tenant = migration_flows.tenant AND"
         " r.flow_id = migration_flows.flow_id)",
         0},
        {"SELECT count(*) FROM migration_runs WHERE end_ts IS NOT NULL", runs},
        {"SELECT count(*) FROM nifi_conversion_history WHERE completed_at IS NOT NULL", runs},
        {"SELECT count(*) FROM migration_iterations WHERE step_status = 'COMPLETED'",
         runs * p->iters},
        {"SELECT count(*) FROM migration_patches", runs * p->iters * p->patches},
        {"SELECT count(*) FROM migration_sast_results", runs * p->iters * p->patches},
        {"SELECT count(*) FROM migration_exec_results", runs * p->iters},
        {"SELECT count(*) FROM migration_human_requests", runs / 10},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof checks / sizeof *checks && rc == 0; i++) {
        int64_t got = q_int(c, checks[i].sql, err);
        if (got != checks[i].want) {
            if (got >= 0)
                snprintf(err, BU_ERR, "%s: got %" PRId64 ", want %" PRId64, checks[i].sql, got,
                         checks[i].want);
            rc = -1;
        }
    }
    PQfinish(c);
    return rc;
}

static int extra_opt(const char *name, const char *val, void *ctx)
{
    struct pg_cfg *cfg = ctx;
    if (strcmp(name, "conninfo") == 0)
        return (cfg->conninfo = val), 1;
    if (strcmp(name, "no-setup") == 0)
        return (cfg->setup = 0), 1;
    return 0;
}

int main(int argc, char **argv)
{
    struct pg_cfg cfg = {getenv("PGBENCH_CONNINFO") ? getenv("PGBENCH_CONNINFO") : "", 1, NULL};
    struct bu_opts o;
    char err[BU_ERR];
    bu_opts_default(&o);
    bu_parse_args(&o, argc, argv, usage, extra_opt, &cfg);
    cfg.p = &o.wl;
    PGconn *c = pg_open(&cfg, err);
    if (!c) {
        fprintf(stderr, "pg-bench: %s\n", err);
        return 1;
    }
    PGresult *r = PQexec(c, "SELECT version(), current_setting('synchronous_commit'),"
                            " current_setting('fsync'), current_setting('wal_sync_method')");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && !o.quiet)
        fprintf(stderr, "pg-bench: %s; synchronous_commit=%s fsync=%s wal_sync_method=%s\n",
                PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
    if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 2), "on") != 0) {
        fprintf(stderr, "pg-bench: refusing to run: the server's fsync is not on\n");
        PQclear(r);
        PQfinish(c);
        return 1;
    }
    PQclear(r);
    if (cfg.setup && exec_simple(c, schema_sql, err) != 0) {
        fprintf(stderr, "pg-bench: schema: %s\n", err);
        PQfinish(c);
        return 1;
    }
    PQfinish(c);
    struct bu_driver d = {"postgres", pg_connect, pg_send,  pg_fd,
                          pg_recv,    pg_close,   pg_reset, pg_verify};
    return bu_matrix(&d, &cfg, &o);
}
