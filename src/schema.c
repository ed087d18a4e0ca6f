/* schema.c: CONTRACT.md section 2's event table and seed 000's seven tables, as data. */
#include "schema.h"

#include <stdint.h>
#include <string.h>

static const char *const flow_statuses[] = {"NOT_STARTED", "RUNNING", "NEEDS_HUMAN", "FAILED",
                                            "DONE", "STOPPED", NULL};
static const char *const priorities[] = {"P0", "P1", "P2", NULL};
static const char *const run_start_statuses[] = {"CREATING", "QUEUED", "RUNNING", NULL};
static const char *const run_statuses[] = {"CREATING", "QUEUED", "RUNNING", "SUCCESS",
                                           "FAILED", "CANCELLED", NULL};
static const char *const step_statuses[] = {"RUNNING", "COMPLETED", "FAILED", NULL};
static const char *const scan_statuses[] = {"PENDING", "SCANNING", "PASSED", "BLOCKED", NULL};
static const char *const job_types[] = {"flow_job", "validation_job", NULL};
static const char *const exec_statuses[] = {"SUCCESS", "FAILED", "TIMEOUT", NULL};
static const char *const human_reasons[] = {"sast_blocked", "validation_failed", "manual_review",
                                            NULL};
static const char *const human_resolutions[] = {"RESOLVED", "IGNORED", NULL};

/* The table is laid out by hand, an event a few lines: clang-format keeps out. */
/* clang-format off */
/* Names are string literals, so their lengths are sizeof - 1. */
#define NAME(n) n, sizeof n - 1
#define ID(n, req) {NAME(n), FL_FK_ID, req, NULL, 0, 0, 0}
#define KEYID(n, req) {NAME(n), FL_FK_ID, req, NULL, 0, 0, FL_ID_KEY_MAX}
#define TEXT(n, req) {NAME(n), FL_FK_TEXT, req, NULL, 0, 0}
#define STEP(n, req) {NAME(n), FL_FK_STEP, req, NULL, 0, 0}
#define JSON(n, req) {NAME(n), FL_FK_JSON, req, NULL, 0, 0}
#define ENUM(n, req, v) {NAME(n), FL_FK_ENUM, req, v, 0, 0}
#define INT(n, req, lo, hi) {NAME(n), FL_FK_INT, req, NULL, lo, hi}
#define ITER INT("iteration_num", 1, 1, INT32_MAX)

const struct fl_event_def fl_event_defs[FL_EV_COUNT] = {
    [FL_EV_FLOW_REGISTERED] = {NAME("flow_registered"), 0, 7,
        {ID("flow_id", 1), TEXT("flow_name", 1), TEXT("server", 0), TEXT("nifi_xml_path", 0),
         TEXT("description", 0), ENUM("priority", 0, priorities), TEXT("owner", 0)}},
    [FL_EV_FLOW_UPDATED] = {NAME("flow_updated"), 0, 7,
        {ID("flow_id", 1), TEXT("flow_name", 0), TEXT("server", 0), TEXT("nifi_xml_path", 0),
         TEXT("description", 0), ENUM("priority", 0, priorities), TEXT("owner", 0)}},
    [FL_EV_FLOW_STATUS] = {NAME("flow_status"), 0, 2,
        {ID("flow_id", 1), ENUM("migration_status", 1, flow_statuses)}},
    [FL_EV_RUN_STARTED] = {NAME("run_started"), 0, 6,
        {ID("run_id", 1), ID("flow_id", 1), ID("job_id", 0), ID("job_run_id", 0),
         ENUM("status", 0, run_start_statuses), TEXT("triggered_by", 0)}},
    [FL_EV_RUN_STATUS] = {NAME("run_status"), 1, 9,
        {ID("run_id", 1), ENUM("status", 1, run_statuses), ID("job_id", 0), ID("job_run_id", 0),
         TEXT("status_message", 0), TEXT("error_message", 0),
         INT("progress_percentage", 0, 0, 100), INT("validation_percentage", 0, 0, 100),
         ENUM("flow_status", 0, flow_statuses)}},
    [FL_EV_ITERATION_STEP] = {NAME("iteration_step"), 1, 6,
        {ID("run_id", 1), ITER, STEP("step", 1),
         ENUM("step_status", 1, step_statuses), TEXT("summary", 0), TEXT("error", 0)}},
    [FL_EV_PATCH] = {NAME("patch"), 1, 5,
        {ID("run_id", 1), ITER, KEYID("artifact_ref", 1), TEXT("patch_summary", 0),
         TEXT("diff_ref", 0)}},
    [FL_EV_SCAN_VERDICT] = {NAME("scan_verdict"), 1, 5,
        {ID("run_id", 1), ITER, KEYID("artifact_ref", 1), ENUM("scan_status", 1, scan_statuses),
         JSON("findings_json", 0)}},
    [FL_EV_EXEC_RESULT] = {NAME("exec_result"), 1, 7,
        {ID("run_id", 1), ITER, ENUM("job_type", 1, job_types), ENUM("status", 1, exec_statuses),
         INT("runtime_s", 0, 0, INT64_MAX), TEXT("error", 0), TEXT("logs_ref", 0)}},
    [FL_EV_HUMAN_REQUEST] = {NAME("human_request"), 1, 4,
        {ID("run_id", 1), ITER, ENUM("reason", 1, human_reasons), TEXT("instructions", 0)}},
    [FL_EV_HUMAN_RESOLUTION] = {NAME("human_resolution"), 1, 3,
        {ID("run_id", 1), ITER, ENUM("status", 1, human_resolutions)}},
    [FL_EV_FLOW_ROLLBACK] = {NAME("flow_rollback"), 0, 3,
        {ID("flow_id", 1), INT("to_seq", 1, 1, INT64_MAX), TEXT("reason", 1)}},
};
/* clang-format on */

#define S(n) {n, FL_CT_STR}
#define I(n) {n, FL_CT_INT}
#define T(n) {n, FL_CT_TS}

const struct fl_table_def fl_table_defs[FL_T_LAST + 1] = {
    [FL_T_FLOWS] = {"migration_flows", FC_FLOW_NCOLS, FC_FLOW_NCOLS, 1,
        {S("flow_id"), S("flow_name"), S("migration_status"), S("current_run_id"),
         T("last_update_ts"), S("server"), S("nifi_xml_path"), S("description"), S("priority"),
         S("owner"), S("current_attempt_id"), I("total_attempts"), I("successful_conversions"),
         T("first_attempt_at"), T("last_attempt_at")},
        {[FC_FLOW_NAME] = FL_IDX_SECONDARY, [FC_FLOW_STATUS] = FL_IDX_SECONDARY}},
    [FL_T_RUNS] = {"migration_runs", FC_RUN_NCOLS, 6, 1,
        {S("run_id"), S("flow_id"), S("job_run_id"), T("start_ts"), T("end_ts"), S("status"),
         S("job_id"), I("attempt_number"), I("progress_percentage"), I("validation_percentage"),
         S("error_message"), S("status_message"), S("triggered_by")},
        {[FC_RUN_FLOW] = FL_IDX_BY_FLOW, [FC_RUN_JOB_RUN_ID] = FL_IDX_SECONDARY,
         [FC_RUN_STATUS] = FL_IDX_SECONDARY}},
    [FL_T_ITERATIONS] = {"migration_iterations", FC_IT_NCOLS, FC_IT_NCOLS, 2,
        {S("run_id"), I("iteration_num"), S("step"), S("step_status"), T("ts"), S("summary"),
         S("error")},
        {[FC_IT_RUN] = FL_IDX_BY_FLOW, [FC_IT_STEP] = FL_IDX_SECONDARY}},
    [FL_T_PATCHES] = {"migration_patches", FC_PA_NCOLS, FC_PA_NCOLS, 3,
        {S("run_id"), I("iteration_num"), S("artifact_ref"), S("patch_summary"), S("diff_ref"),
         T("ts")},
        {[FC_PA_RUN] = FL_IDX_BY_FLOW}},
    [FL_T_SAST] = {"migration_sast_results", FC_SA_NCOLS, FC_SA_NCOLS, 3,
        {S("run_id"), I("iteration_num"), S("artifact_ref"), S("scan_status"),
         S("findings_json"), T("ts")},
        {[FC_SA_RUN] = FL_IDX_BY_FLOW}},
    [FL_T_EXEC] = {"migration_exec_results", FC_EX_NCOLS, FC_EX_NCOLS, 3,
        {S("run_id"), I("iteration_num"), S("job_type"), S("status"), I("runtime_s"), S("error"),
         S("logs_ref"), T("ts")},
        {[FC_EX_RUN] = FL_IDX_BY_FLOW}},
    [FL_T_HUMAN] = {"migration_human_requests", FC_HU_NCOLS, FC_HU_NCOLS, 2,
        {S("run_id"), I("iteration_num"), S("reason"), S("status"), S("instructions"), T("ts")},
        {[FC_HU_RUN] = FL_IDX_BY_FLOW}},
};

/* The first byte rules out most names before strlen and memcmp (b may be NULL if blen is 0). */
static int name_eq(const char *a, const char *b, size_t blen)
{
    if (blen == 0)
        return a[0] == '\0';
    return a[0] == b[0] && strlen(a) == blen && memcmp(a, b, blen) == 0;
}

int fl_event_type_from_name(const char *name, size_t len)
{
    for (int t = 0; t < FL_EV_COUNT; t++)
        if (fl_event_defs[t].name_len == len && memcmp(fl_event_defs[t].name, name, len) == 0)
            return t;
    return -1;
}

int fl_event_field_index(enum fl_event_type t, const char *name)
{
    const struct fl_event_def *d = &fl_event_defs[t];
    /* The projection asks a lot, always with a literal: the linker merges equal literals, so
     * the pointer alone finds it (callgrind: -1.5% of a commit); else the first byte rules out
     * most fields. */
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].name == name)
            return (int)i;
    for (size_t i = 0; i < d->nfields; i++)
        if (d->fields[i].name[0] == name[0] && strcmp(d->fields[i].name, name) == 0)
            return (int)i;
    return -1;
}

int fl_enum_index(const char *const *values, const char *s, size_t len)
{
    for (int i = 0; values[i]; i++)
        if (name_eq(values[i], s, len))
            return i;
    return -1;
}

int fl_table_from_name(const char *name, size_t len)
{
    for (int t = FL_T_FLOWS; t <= FL_T_LAST; t++)
        if (name_eq(fl_table_defs[t].name, name, len))
            return t;
    return -1;
}

int fl_table_col(enum fl_table t, const char *name, size_t len)
{
    const struct fl_table_def *d = &fl_table_defs[t];
    for (size_t i = 0; i < d->nvisible; i++)
        if (name_eq(d->cols[i].name, name, len))
            return (int)i;
    return -1;
}
