/* test_store.c: every event type's happy path and every error it can give; idempotency,
 * expected_version, atomic batches, rollback, as-of, history, tables, log filters, map growth,
 * format check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "store_int.h"
#include "testutil.h"


#define T "acme:eng-2026"
#define REG(flow) \
    "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"" flow "\",\"flow_name\":\"" flow \
    ".xml\",\"priority\":\"P1\",\"owner\":\"pod-a\"}}"
#define START(run, flow) \
    "{\"type\":\"run_started\",\"data\":{\"run_id\":\"" run "\",\"flow_id\":\"" flow \
    "\",\"job_run_id\":\"981\"}}"
#define RSTATUS(run, st) "{\"type\":\"run_status\",\"data\":{\"run_id\":\"" run "\",\"status\":\"" st "\"}}"

static void ok(struct fl_store *s, const char *json)
{
    struct fl_error e;
    int rc = tu_append(s, T, json, NULL, 0, &e);
    if (rc != 0)
        fail_msg("append failed: %s: %s (%s)", fl_err_name(rc), e.msg, json);
}

static void expect_err(struct fl_store *s, const char *json, int code)
{
    struct fl_error e;
    uint64_t head = fl_store_head(s);
    int rc = tu_append(s, T, json, NULL, 0, &e);
    if (rc != code)
        fail_msg("expected %s, got %s: %s (%s)", fl_err_name(code), fl_err_name(rc), e.msg, json);
    assert_true(strlen(e.msg) > 0);
    assert_int_equal(fl_store_head(s), head); /* nothing committed */
}

static void test_flow_registered(void **state)
{
    struct tu_fx *f = *state;
    struct fl_ack ack;
    struct fl_error e;

    assert_int_equal(tu_append(f->s, T, REG("abc-123"), &ack, 1, &e), 0);
    assert_int_equal(ack.seq, 1);
    assert_int_equal(ack.duplicate, 0);
    json_t *st = tu_state(f->s, T, "abc-123", 0, &e);
    assert_non_null(st);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "NOT_STARTED");
    assert_string_equal(tu_str(st, "migration_flows/0/flow_name"), "abc-123.xml");
    assert_string_equal(tu_str(st, "migration_flows/0/priority"), "P1");
    assert_int_equal(tu_int(st, "migration_flows/0/total_attempts"), 0);
    assert_int_equal(tu_int(st, "migration_flows/0/successful_conversions"), 0);
    assert_int_equal(tu_int(st, "migration_flows/0/last_update_ts"), ack.ts);
    assert_true(json_is_null(tu_get(st, "migration_flows/0/current_run_id")));
    assert_true(json_is_null(tu_get(st, "migration_flows/0/server")));
    assert_int_equal(json_object_size(tu_get(st, "migration_flows/0")), 15);
    assert_int_equal(tu_int(st, "version"), 1);
    assert_int_equal(tu_int(st, "as_of_seq"), 1);
    json_decref(st);
    expect_err(f->s, REG("abc-123"), FL_EALREADY_EXISTS);
    /* another tenant may use the same flow id */
    assert_int_equal(tu_append(f->s, "other", REG("abc-123"), NULL, 0, &e), 0);
}

static void test_flow_updated_and_status(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    expect_err(f->s, "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"nope\",\"owner\":\"x\"}}",
               FL_ENOT_FOUND);
    expect_err(f->s, "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"nope\",\"migration_status\":\"DONE\"}}",
               FL_ENOT_FOUND);
    ok(f->s, REG("f1"));
    ok(f->s, "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\",\"owner\":\"pod-b\",\"server\":\"nifi-prod\",\"description\":null}}");
    ok(f->s, "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"NEEDS_HUMAN\"}}");
    expect_err(f->s, "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"WAITING\"}}",
               FL_EBAD_REQUEST);
    json_t *st = tu_state(f->s, T, "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "pod-b");
    assert_string_equal(tu_str(st, "migration_flows/0/server"), "nifi-prod");
    assert_string_equal(tu_str(st, "migration_flows/0/flow_name"), "f1.xml");
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "NEEDS_HUMAN");
    assert_int_equal(tu_int(st, "version"), 3);
    json_decref(st);
}

static void test_run_lifecycle(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;
    struct fl_ack a1, a2;

    expect_err(f->s, START("r1", "f1"), FL_ENOT_FOUND);
    ok(f->s, REG("f1"));
    assert_int_equal(tu_append(f->s, T, START("r1", "f1"), &a1, 1, &e), 0);
    expect_err(f->s, START("r1", "f1"), FL_EALREADY_EXISTS);
    json_t *st = tu_state(f->s, T, "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "RUNNING");
    assert_string_equal(tu_str(st, "migration_flows/0/current_run_id"), "r1");
    assert_string_equal(tu_str(st, "migration_flows/0/current_attempt_id"), "r1");
    assert_int_equal(tu_int(st, "migration_flows/0/total_attempts"), 1);
    assert_int_equal(tu_int(st, "migration_flows/0/first_attempt_at"), a1.ts);
    assert_string_equal(tu_str(st, "migration_runs/0/status"), "RUNNING");
    assert_int_equal(tu_int(st, "migration_runs/0/start_ts"), a1.ts);
    assert_true(json_is_null(tu_get(st, "migration_runs/0/end_ts")));
    assert_int_equal(json_object_size(tu_get(st, "migration_runs/0")), 6);
    assert_int_equal(tu_int(st, "attempt_history/0/attempt_number"), 1);
    json_decref(st);

    expect_err(f->s, RSTATUS("r1", "QUEUED"), FL_EINVALID_TRANSITION);
    expect_err(f->s, RSTATUS("nope", "RUNNING"), FL_ENOT_FOUND);
    ok(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r1\",\"status\":\"RUNNING\",\"progress_percentage\":40}}");
    expect_err(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r1\",\"status\":\"RUNNING\",\"progress_percentage\":101}}",
               FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r1\",\"status\":\"RUNNING\",\"flow_status\":\"DONE\"}}",
               FL_EBAD_REQUEST);
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r1\",\"status\":\"SUCCESS\",\"validation_percentage\":100,\"status_message\":\"ok\"}}", &a2, 1, &e), 0);
    st = tu_state(f->s, T, "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "DONE");
    assert_int_equal(tu_int(st, "migration_flows/0/successful_conversions"), 1);
    assert_int_equal(tu_int(st, "migration_runs/0/end_ts"), a2.ts);
    assert_string_equal(tu_str(st, "attempt_history/0/status"), "SUCCESS");
    assert_int_equal(tu_int(st, "attempt_history/0/progress_percentage"), 40);
    assert_int_equal(tu_int(st, "attempt_history/0/validation_percentage"), 100);
    assert_int_equal(tu_int(st, "attempt_history/0/duration_seconds"), (a2.ts - a1.ts) / 1000000);
    json_decref(st);
    expect_err(f->s, RSTATUS("r1", "FAILED"), FL_EINVALID_TRANSITION);
    expect_err(f->s, "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"r1\",\"iteration_num\":1,\"step\":\"validate\",\"step_status\":\"RUNNING\"}}",
               FL_EINVALID_TRANSITION);

    /* Terminal mapping with flow_status, and a non-current run leaves the flow alone. */
    ok(f->s, START("r2", "f1"));
    ok(f->s, START("r3", "f1"));
    ok(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r2\",\"status\":\"CANCELLED\"}}");
    st = tu_state(f->s, T, "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "RUNNING");
    json_decref(st);
    ok(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"r3\",\"status\":\"FAILED\",\"flow_status\":\"NEEDS_HUMAN\",\"error_message\":\"boom\"}}");
    st = tu_state(f->s, T, "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "NEEDS_HUMAN");
    assert_int_equal(tu_int(st, "migration_flows/0/total_attempts"), 3);
    assert_string_equal(tu_str(st, "attempt_history/0/attempt_id"), "r3");
    assert_string_equal(tu_str(st, "attempt_history/0/error_message"), "boom");
    assert_int_equal(tu_int(st, "attempt_history/2/attempt_number"), 1);
    json_decref(st);
    /* CREATING -> QUEUED -> RUNNING, default status of run_started is RUNNING */
    ok(f->s, "{\"type\":\"run_started\",\"data\":{\"run_id\":\"r4\",\"flow_id\":\"f1\",\"status\":\"CREATING\"}}");
    ok(f->s, RSTATUS("r4", "QUEUED"));
    ok(f->s, RSTATUS("r4", "QUEUED"));
    ok(f->s, RSTATUS("r4", "RUNNING"));
    expect_err(f->s, RSTATUS("r4", "CREATING"), FL_EINVALID_TRANSITION);
    expect_err(f->s, "{\"type\":\"run_started\",\"data\":{\"run_id\":\"r5\",\"flow_id\":\"f1\",\"status\":\"SUCCESS\"}}",
               FL_EBAD_REQUEST);
}

#define IT(run, n, step, st) \
    "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"step\":\"" step "\",\"step_status\":\"" st "\",\"summary\":\"s\"}}"
#define SCAN(run, n, art, st) \
    "{\"type\":\"scan_verdict\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"artifact_ref\":\"" art "\",\"scan_status\":\"" st "\",\"findings_json\":\"{\\\"f\\\":[]}\"}}"
#define EXEC(run, n, jt, st) \
    "{\"type\":\"exec_result\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"job_type\":\"" jt "\",\"status\":\"" st "\",\"runtime_s\":12}}"
#define HREQ(run, n) \
    "{\"type\":\"human_request\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"reason\":\"sast_blocked\",\"instructions\":\"look\"}}"
#define HRES(run, n, st) \
    "{\"type\":\"human_resolution\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"status\":\"" st "\"}}"
#define PATCH(run, n, art) \
    "{\"type\":\"patch\",\"data\":{\"run_id\":\"" run "\",\"iteration_num\":" #n \
    ",\"artifact_ref\":\"" art "\",\"patch_summary\":\"p\",\"diff_ref\":\"d\"}}"

static void test_child_tables(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    ok(f->s, REG("f1"));
    expect_err(f->s, IT("r1", 1, "parse_xml", "RUNNING"), FL_ENOT_FOUND);
    ok(f->s, START("r1", "f1"));
    ok(f->s, IT("r1", 1, "generate_code", "RUNNING"));
    ok(f->s, IT("r1", 1, "generate_code", "RUNNING"));
    ok(f->s, IT("r1", 1, "generate_code", "COMPLETED"));
    expect_err(f->s, IT("r1", 1, "generate_code", "RUNNING"), FL_EINVALID_TRANSITION);
    expect_err(f->s, IT("r1", 0, "generate_code", "RUNNING"), FL_EBAD_REQUEST);
    expect_err(f->s, IT("r1", 2, "", "RUNNING"), FL_EBAD_REQUEST);
    ok(f->s, IT("r1", 2, "fix_errors", "FAILED"));
    ok(f->s, IT("r1", 10, "fix_errors", "RUNNING"));
    ok(f->s, PATCH("r1", 1, "processor_2.py"));
    ok(f->s, PATCH("r1", 1, "processor_1.py"));
    ok(f->s, PATCH("r1", 2, "processor_1.py"));
    ok(f->s, PATCH("r1", 2, "processor_1.py")); /* upsert */
    ok(f->s, SCAN("r1", 1, "processor_1.py", "PENDING"));
    ok(f->s, SCAN("r1", 1, "processor_1.py", "SCANNING"));
    expect_err(f->s, SCAN("r1", 1, "processor_1.py", "PENDING"), FL_EINVALID_TRANSITION);
    ok(f->s, SCAN("r1", 1, "processor_1.py", "PASSED"));
    expect_err(f->s, SCAN("r1", 1, "processor_1.py", "BLOCKED"), FL_EINVALID_TRANSITION);
    ok(f->s, SCAN("r1", 1, "processor_2.py", "BLOCKED"));
    expect_err(f->s, "{\"type\":\"scan_verdict\",\"data\":{\"run_id\":\"r1\",\"iteration_num\":3,\"artifact_ref\":\"a\",\"scan_status\":\"PASSED\",\"findings_json\":\"{not json\"}}",
               FL_EBAD_REQUEST);
    ok(f->s, EXEC("r1", 1, "validation_job", "FAILED"));
    expect_err(f->s, EXEC("r1", 1, "validation_job", "SUCCESS"), FL_EINVALID_TRANSITION);
    ok(f->s, EXEC("r1", 1, "flow_job", "TIMEOUT"));
    expect_err(f->s, EXEC("r1", 2, "other_job", "SUCCESS"), FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"exec_result\",\"data\":{\"run_id\":\"r1\",\"iteration_num\":2,\"job_type\":\"flow_job\",\"status\":\"SUCCESS\",\"runtime_s\":-1}}",
               FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"exec_result\",\"data\":{\"run_id\":\"r1\",\"iteration_num\":2,\"job_type\":\"flow_job\",\"status\":\"SUCCESS\",\"runtime_s\":1.5}}",
               FL_EBAD_REQUEST);
    expect_err(f->s, HRES("r1", 1, "RESOLVED"), FL_EINVALID_TRANSITION);
    ok(f->s, HREQ("r1", 1));
    expect_err(f->s, HREQ("r1", 1), FL_EINVALID_TRANSITION);
    ok(f->s, HRES("r1", 1, "RESOLVED"));
    expect_err(f->s, HRES("r1", 1, "IGNORED"), FL_EINVALID_TRANSITION);
    ok(f->s, HREQ("r1", 2));
    ok(f->s, RSTATUS("r1", "FAILED"));
    ok(f->s, HRES("r1", 2, "IGNORED")); /* allowed after the run ended */
    expect_err(f->s, PATCH("r1", 3, "x.py"), FL_EINVALID_TRANSITION);

    json_t *st = tu_state(f->s, T, "f1", 0, &e);
    assert_int_equal(json_array_size(tu_get(st, "migration_iterations")), 3);
    assert_int_equal(tu_int(st, "migration_iterations/2/iteration_num"), 10); /* numeric order */
    assert_string_equal(tu_str(st, "migration_iterations/0/step_status"), "COMPLETED");
    assert_int_equal(json_array_size(tu_get(st, "migration_patches")), 3);
    assert_string_equal(tu_str(st, "migration_patches/0/artifact_ref"), "processor_1.py");
    assert_int_equal(json_array_size(tu_get(st, "migration_sast_results")), 2);
    assert_string_equal(tu_str(st, "migration_sast_results/0/scan_status"), "PASSED");
    assert_string_equal(tu_str(st, "migration_sast_results/0/findings_json"), "{\"f\":[]}");
    assert_int_equal(json_array_size(tu_get(st, "migration_exec_results")), 2);
    assert_string_equal(tu_str(st, "migration_exec_results/0/job_type"), "flow_job");
    assert_int_equal(tu_int(st, "migration_exec_results/1/runtime_s"), 12);
    assert_string_equal(tu_str(st, "migration_human_requests/0/status"), "RESOLVED");
    assert_string_equal(tu_str(st, "migration_human_requests/1/status"), "IGNORED");
    assert_int_equal(tu_int(st, "attempt_history/0/iterations"), 3);
    assert_int_equal(json_array_size(tu_get(st, "attempt_history/0/generated_notebooks")), 2);
    assert_string_equal(tu_str(st, "attempt_history/0/generated_notebooks/0"), "processor_1.py");
    assert_string_equal(tu_str(st, "attempt_history/0/generated_notebooks/1"), "processor_2.py");
    json_decref(st);
}

static void test_form_errors(void **state)
{
    struct tu_fx *f = *state;
    char big[300];

    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"n\",\"colour\":\"red\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"n\"},\"extra\":1}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_exploded\",\"data\":{}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"data\":{\"flow_id\":\"a\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\"}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":null,\"flow_name\":\"n\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":7,\"flow_name\":\"n\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"\",\"flow_name\":\"n\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"n\",\"priority\":\"P9\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"r\",\"iteration_num\":true,\"step\":\"s\",\"step_status\":\"RUNNING\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"n\"},\"expected_version\":-1}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"n\"},\"event_id\":\"\"}", FL_EBAD_REQUEST);
    memset(big, 'x', 257);
    big[257] = '\0';
    assert_int_equal(tu_appendf(f->s, T, NULL, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"%s\",\"flow_name\":\"n\"}}", big), FL_EBAD_REQUEST);
    /* a 64 KiB + 1 text is refused (bad_request: CONTRACT.md 2); exactly 64 KiB is fine */
    char *text = malloc(65538);
    memset(text, 'y', 65537);
    text[65537] = '\0';
    assert_int_equal(
        tu_appendf(
            f->s, T, NULL,
            "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"%s\"}}",
            text),
        FL_EBAD_REQUEST);
    text[65536] = '\0';
    assert_int_equal(tu_appendf(f->s, T, NULL, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"a\",\"flow_name\":\"%s\",\"server\":null}}", text), 0);
    free(text);
    /* the error names the field */
    struct fl_error e;
    tu_append(f->s, T, "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"a\",\"owner\":5}}", NULL, 0, &e);
    assert_non_null(strstr(e.msg, "owner"));
}

static void test_idempotency(void **state)
{
    struct tu_fx *f = *state;
    struct fl_ack a, b;
    struct fl_error e;

    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_registered\",\"event_id\":\"e1\",\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"n\"}}", &a, 1, &e), 0);
    ok(f->s, "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"DONE\"}}");
    /* retried after the flow moved on, with a stale expected_version: still a duplicate */
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_registered\",\"event_id\":\"e1\",\"expected_version\":0,\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"n\"}}", &b, 1, &e), 0);
    assert_int_equal(b.duplicate, 1);
    assert_int_equal(b.seq, a.seq);
    assert_int_equal(b.ts, a.ts);
    assert_int_equal(fl_store_head(f->s), 2);
    /* null optional fields are the same as absent: still the same payload */
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_registered\",\"event_id\":\"e1\",\"data\":{\"flow_name\":\"n\",\"flow_id\":\"f1\",\"owner\":null}}", &b, 1, &e), 0);
    assert_int_equal(b.duplicate, 1);
    expect_err(f->s, "{\"type\":\"flow_registered\",\"event_id\":\"e1\",\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"other\"}}", FL_EIDEMPOTENCY_MISMATCH);
    expect_err(f->s, "{\"type\":\"flow_updated\",\"event_id\":\"e1\",\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"n\"}}", FL_EIDEMPOTENCY_MISMATCH);
    /* event ids are per tenant */
    assert_int_equal(tu_append(f->s, "t2", "{\"type\":\"flow_registered\",\"event_id\":\"e1\",\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"n\"}}", &b, 1, &e), 0);
    assert_int_equal(b.duplicate, 0);
    /* the same id twice in one append, with other data: the message names the events, not a
     * seq that is never committed */
    struct fl_ack two[3];
    assert_int_equal(tu_append(f->s, T,
                               "[{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"f1\","
                               "\"migration_status\":\"DONE\"}},"
                               "{\"type\":\"flow_updated\",\"event_id\":\"j2\",\"data\":{\"flow_"
                               "id\":\"f1\",\"owner\":\"a\"}},"
                               "{\"type\":\"flow_updated\",\"event_id\":\"j2\",\"data\":{\"flow_"
                               "id\":\"f1\",\"owner\":\"b\"}}]",
                               two, 3, &e),
                     FL_EIDEMPOTENCY_MISMATCH);
    assert_int_equal(e.index, 2);
    assert_non_null(strstr(e.msg, "given twice in this append (at events 1 and 2)"));
}

static void test_expected_version(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    ok(f->s, "{\"type\":\"flow_registered\",\"expected_version\":0,\"data\":{\"flow_id\":\"f1\",\"flow_name\":\"n\"}}");
    ok(f->s, "{\"type\":\"flow_status\",\"expected_version\":1,\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"DONE\"}}");
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_status\",\"expected_version\":1,\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"DONE\"}}", NULL, 0, &e), FL_ECONFLICT);
    assert_int_equal(e.version, 2);
    /* conflict comes before existence */
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_status\",\"expected_version\":3,\"data\":{\"flow_id\":\"zz\",\"migration_status\":\"DONE\"}}", NULL, 0, &e), FL_ECONFLICT);
    assert_int_equal(e.version, 0);
    /* run-level events count in their flow's version */
    ok(f->s, "{\"type\":\"run_started\",\"expected_version\":2,\"data\":{\"run_id\":\"r\",\"flow_id\":\"f1\"}}");
    ok(f->s, "{\"type\":\"run_status\",\"expected_version\":3,\"data\":{\"run_id\":\"r\",\"status\":\"RUNNING\"}}");
    /* in a batch each event sees the versions left by the events before it */
    ok(f->s, "[{\"type\":\"flow_registered\",\"expected_version\":0,\"data\":{\"flow_id\":\"f2\",\"flow_name\":\"n\"}},"
             "{\"type\":\"flow_status\",\"expected_version\":1,\"data\":{\"flow_id\":\"f2\",\"migration_status\":\"DONE\"}}]");
    /* PROTOCOL.md 4 "Events": a run-level event of a missing run addresses no known flow, whose
     * version is 0; nil is absent */
    assert_int_equal(tu_append(f->s, T,
                               "{\"type\":\"run_status\",\"expected_version\":4,\"data\":{\"run_"
                               "id\":\"nope\",\"status\":\"RUNNING\"}}",
                               NULL, 0, &e),
                     FL_ECONFLICT);
    assert_int_equal(e.version, 0);
    expect_err(f->s,
               "{\"type\":\"run_status\",\"expected_version\":0,\"data\":{\"run_id\":\"nope\","
               "\"status\":\"RUNNING\"}}",
               FL_ENOT_FOUND);
    ok(f->s, "{\"type\":\"flow_status\",\"expected_version\":null,\"event_id\":null,\"data\":{"
             "\"flow_id\":\"f2\",\"migration_status\":\"DONE\"}}");
    /* the flow before the run: a used run_id with a missing flow is not_found */
    expect_err(f->s, "{\"type\":\"run_started\",\"data\":{\"run_id\":\"r\",\"flow_id\":\"zz\"}}",
               FL_ENOT_FOUND);
    /* to_seq 0 is a form error, before expected_version; out of the flow's range, after it */
    expect_err(f->s,
               "{\"type\":\"flow_rollback\",\"expected_version\":99,\"data\":{\"flow_id\":\"f1\","
               "\"to_seq\":0,\"reason\":\"x\"}}",
               FL_EBAD_REQUEST);
    expect_err(f->s,
               "{\"type\":\"flow_rollback\",\"expected_version\":99,\"data\":{\"flow_id\":\"f1\","
               "\"to_seq\":999,\"reason\":\"x\"}}",
               FL_ECONFLICT);
    expect_err(f->s,
               "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":999,\"reason\":"
               "\"x\"}}",
               FL_EBAD_REQUEST);
}

/* An event that changes an existing row sets the columns it gives; absent or nil ones keep their
 * value (PROTOCOL.md 4 "Events"). */
static void test_absent_fields_keep(void **state)
{
    struct tu_fx *f = *state;

    ok(f->s, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"k\",\"flow_name\":\"n\","
             "\"owner\":\"o\",\"server\":\"s\"}}");
    ok(f->s,
       "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"k\",\"owner\":null,\"server\":\"s2\"}}");
    ok(f->s, START("kr", "k"));
    ok(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"kr\",\"status\":\"RUNNING\",\"status_"
             "message\":\"m\",\"progress_percentage\":40}}");
    ok(f->s, "{\"type\":\"run_status\",\"data\":{\"run_id\":\"kr\",\"status\":\"RUNNING\",\"status_"
             "message\":null}}");
    ok(f->s, "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"kr\",\"iteration_num\":1,"
             "\"step\":\"a\",\"step_status\":\"RUNNING\",\"summary\":\"s1\",\"error\":\"e1\"}}");
    ok(f->s, "{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"kr\",\"iteration_num\":1,"
             "\"step\":\"b\",\"step_status\":\"COMPLETED\",\"error\":null}}");
    json_t *st = tu_state(f->s, T, "k", 0, NULL);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "o");
    assert_string_equal(tu_str(st, "migration_flows/0/server"), "s2");
    assert_string_equal(tu_str(st, "attempt_history/0/status_message"), "m");
    assert_int_equal(tu_int(st, "attempt_history/0/progress_percentage"), 40);
    assert_string_equal(tu_str(st, "migration_iterations/0/step"), "b");
    assert_string_equal(tu_str(st, "migration_iterations/0/step_status"), "COMPLETED");
    assert_string_equal(tu_str(st, "migration_iterations/0/summary"), "s1");
    assert_string_equal(tu_str(st, "migration_iterations/0/error"), "e1");
    json_decref(st);
}

static void test_batches(void **state)
{
    struct tu_fx *f = *state;
    struct fl_ack acks[3];
    struct fl_error e;

    assert_int_equal(tu_append(f->s, T, "[" REG("f1") "," START("r1", "f1") "," REG("f2") "]", acks, 3, &e), 0);
    assert_int_equal(acks[0].seq, 1);
    assert_int_equal(acks[2].seq, 3);
    assert_int_equal(acks[0].ts, acks[2].ts);
    /* the third event fails: nothing of the batch is committed and the error names index 2 */
    assert_int_equal(tu_append(f->s, T, "[" REG("f3") "," START("r3", "f3") "," START("r3", "f3") "]", acks, 3, &e), FL_EALREADY_EXISTS);
    assert_int_equal(e.index, 2);
    assert_int_equal(fl_store_head(f->s), 3);
    assert_null(tu_state(f->s, T, "f3", 0, &e));
    assert_int_equal(e.code, FL_ENOT_FOUND);
    /* the failed batch did not burn r3: it can start now */
    ok(f->s, "[" REG("f3") "," START("r3", "f3") "]");
    tu_verify_ok(f->s);
}

#define BAD_FORM "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\",\"bogus\":1}}"

/* An append's error names its first bad event (CONTRACT.md 3), also when a later event is
 * malformed: the events before a malformed one are checked against the state first, and
 * nothing of the append is committed either way. */
static void test_batch_first_bad_event(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    ok(f->s, REG("f1"));
    /* event 1 is refused by the state, event 3 by its form: event 1 is named */
    assert_int_equal(tu_append(f->s, T,
                               "[" REG("f2") "," START("r1", "nope") "," REG("f3") "," BAD_FORM "]",
                               NULL, 0, &e),
                     FL_ENOT_FOUND);
    assert_int_equal(e.index, 1);
    assert_int_equal(fl_store_head(f->s), 1);
    /* every event before the malformed one passes: the malformed one is named, and the events
     * that passed were written, then taken back (the group is redone without them) */
    assert_int_equal(
        tu_append(f->s, T, "[" REG("f2") "," START("r1", "f2") "," BAD_FORM "]", NULL, 0, &e),
        FL_EBAD_REQUEST);
    assert_int_equal(e.index, 2);
    assert_non_null(strstr(e.msg, "bogus"));
    assert_int_equal(fl_store_head(f->s), 1);
    assert_null(tu_state(f->s, T, "f2", 0, &e));
    /* duplicates before it are not bad events */
    assert_int_equal(tu_append(f->s, T, "[" REG("f1") "," BAD_FORM "]", NULL, 0, &e),
                     FL_EALREADY_EXISTS);
    assert_int_equal(e.index, 0);
    assert_int_equal(tu_append(f->s, T,
                               "[{\"type\":\"flow_status\",\"event_id\":\"e1\",\"data\":{\"flow_"
                               "id\":\"f1\",\"migration_status\":\"DONE\"}}]",
                               NULL, 0, &e),
                     0);
    assert_int_equal(tu_append(f->s, T,
                               "[{\"type\":\"flow_status\",\"event_id\":\"e1\",\"data\":{\"flow_"
                               "id\":\"f1\",\"migration_status\":\"DONE\"}}," BAD_FORM "]",
                               NULL, 0, &e),
                     FL_EBAD_REQUEST);
    assert_int_equal(e.index, 1);
    assert_int_equal(fl_store_head(f->s), 2);
    /* r1 and f2 were not burnt */
    ok(f->s, "[" REG("f2") "," START("r1", "f2") "]");
    assert_int_equal(fl_store_head(f->s), 4);
    tu_verify_ok(f->s);
}

/* Several appends in one commit: each has its own outcome. */
/* A NUL byte takes two bytes in a storage key. An artifact_ref, part of a row's primary key,
 * may take FL_ID_KEY_MAX bytes so counted, so that no id can make a key over LMDB's 511 bytes
 * (which would break the whole commit); the other ids are never escaped and may be 256 NULs. */
static void nul_id(char *out, size_t cap, int nuls, int others)
{
    out[0] = '\0';
    for (int i = 0; i < nuls; i++)
        strncat(out, "\\u0000", cap - strlen(out) - 1);
    for (int i = 0; i < others; i++)
        strncat(out, "a", cap - strlen(out) - 1);
}

static void test_nul_heavy_ids(void **state)
{
    struct tu_fx *f = *state;
    char id[256 * 6 + 1], text[4096];
    struct fl_error e;

    ok(f->s, REG("f1"));
    ok(f->s, START("r1", "f1"));
    /* 216 NUL and 40 more: 256 bytes, 472 in a key; 256 NUL: 512 */
    for (int n = 216; n <= 256; n += 40) {
        nul_id(id, sizeof id, n, 256 - n);
        snprintf(text, sizeof text, PATCH("r1", 1, "%s"), id);
        assert_int_equal(tu_append(f->s, T, text, NULL, 0, &e), FL_EBAD_REQUEST);
        assert_non_null(strstr(e.msg, "data.artifact_ref: 256 bytes"));
    }
    nul_id(id, sizeof id, 215, 41); /* 256 bytes, 471 in a key: the most */
    snprintf(text, sizeof text, PATCH("r1", 1, "%s"), id);
    ok(f->s, text);
    snprintf(text, sizeof text,
             "{\"type\": \"scan_verdict\", \"data\": {\"run_id\": \"r1\", \"iteration_num\": 1, "
             "\"artifact_ref\": \"%s\", \"scan_status\": \"PASSED\"}}",
             id);
    ok(f->s, text);
    /* ids outside primary keys: any 256 bytes */
    nul_id(id, sizeof id, 256, 0);
    snprintf(text, sizeof text, REG("%s"), id, id);
    ok(f->s, text);
    snprintf(text, sizeof text, START("%s", "f1"), id);
    ok(f->s, text);
    json_t *st = tu_state(f->s, T, "f1", 0, &e);
    assert_int_equal(json_string_length(tu_get(st, "migration_patches/0/artifact_ref")), 256);
    assert_int_equal(json_string_length(tu_get(st, "migration_sast_results/0/artifact_ref")), 256);
    assert_int_equal(json_string_length(tu_get(st, "migration_runs/0/run_id")), 256);
    json_decref(st);
    tu_verify_ok(f->s);
}

static void test_group_outcomes(void **state)
{
    struct tu_fx *f = *state;
    const char *const tenants[3] = {T, T, T};
    const char *const texts[3] = {REG("g1"), REG("g1"), REG("g2")};
    int codes[3];
    uint64_t seqs[3];

    tu_commit_group(f->s, 3, tenants, texts, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], FL_EALREADY_EXISTS);
    assert_int_equal(codes[2], 0);
    assert_int_equal(seqs[0], 1);
    assert_int_equal(seqs[2], 2);
    /* an append checked up to its malformed event writes, then is taken out of the group (the
     * group is redone without it): the appends around it commit, with seqs in a row */
    const char *const texts2[3] = {REG("g3"), "[" REG("g4") "," START("gr4", "g4") "," BAD_FORM "]",
                                   "[" REG("g4") "," START("gr4", "g4") "]"};
    tu_commit_group(f->s, 3, tenants, texts2, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], FL_EBAD_REQUEST);
    assert_int_equal(codes[2], 0);
    assert_int_equal(seqs[0], 3);
    assert_int_equal(seqs[2], 5);
    tu_verify_ok(f->s);
}

/* The projection code caches names and versions for the length of a write transaction. An
 * append whose last event fails undoes its earlier events (the group is redone without it:
 * there are no nested transactions under MDB_WRITEMAP): what they
 * created (a tenant, a flow, runs, versions) must be forgotten too, or the appends after it in
 * the same group would see flows and runs that do not exist, numbers given out twice, or
 * versions that were never reached. */
static void test_group_after_failed_append(void **state)
{
    struct tu_fx *f = *state;
    const char *const tenants[8] = {T, T, "other:t", T, "other:t", T, T, T};
    const char *const texts[8] = {
        /* 0: ok: c1 (version 3) and run cr1 */
        "[" REG("c1") "," START("cr1", "c1") "," IT("cr1", 1, "generate_code", "RUNNING") "]",
        /* 1: fails at its last event: c2, cr2 (on c2), cr3 (on c1), c1 to version 5 undone */
        "[" REG("c2") "," START("cr2", "c2") "," START("cr3", "c1") ","
        "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"c1\",\"owner\":\"x\"}},"
        RSTATUS("nope", "RUNNING") "]",
        /* 2: fails: a new tenant and its flow, undone */
        "[" REG("t1") "," RSTATUS("nope", "RUNNING") "]",
        /* 3: c2 is not registered, so this is no duplicate; cr3 was never used; c1 is at 3 */
        "[" REG("c2") ","
        "{\"type\":\"run_started\",\"expected_version\":3,\"data\":{\"run_id\":\"cr3\","
        "\"flow_id\":\"c1\"}}]",
        /* 4: the tenant again, from scratch */
        "[" REG("t1") "]",
        /* 5: cr2 was never started */
        "[" IT("cr2", 1, "generate_code", "RUNNING") "]",
        /* 6: now it is, on the new c2 (version 3 after it) */
        "[" START("cr2", "c2") "," IT("cr2", 1, "generate_code", "RUNNING") "]",
        /* 7: c1 is at 4 after cr3 started */
        "[{\"type\":\"flow_updated\",\"expected_version\":4,\"data\":{\"flow_id\":\"c1\","
        "\"owner\":\"y\"}}]",
    };
    int codes[8];
    uint64_t seqs[8];

    tu_commit_group(f->s, 8, tenants, texts, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], FL_ENOT_FOUND);
    assert_int_equal(codes[2], FL_ENOT_FOUND);
    assert_int_equal(codes[3], 0);
    assert_int_equal(codes[4], 0);
    assert_int_equal(codes[5], FL_ENOT_FOUND);
    assert_int_equal(codes[6], 0);
    assert_int_equal(codes[7], 0);
    assert_int_equal(seqs[3], 5);
    assert_int_equal(seqs[4], 6);
    assert_int_equal(seqs[7], 9);
    json_t *st = tu_state(f->s, T, "c1", 0, NULL);
    assert_non_null(st);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "y");
    assert_int_equal(tu_int(st, "version"), 5);
    json_decref(st);
    st = tu_state(f->s, T, "c2", 0, NULL);
    assert_non_null(st);
    assert_int_equal(tu_int(st, "version"), 3);
    assert_string_equal(tu_str(st, "migration_runs/0/run_id"), "cr2");
    json_decref(st);
    tu_verify_ok(f->s);
    /* and the next group starts from what was committed */
    tu_commit_group(f->s, 1, tenants + 7, (const char *const[]){
        "[{\"type\":\"flow_updated\",\"expected_version\":5,\"data\":{\"flow_id\":\"c1\","
        "\"owner\":\"z\"}}," START("cr3", "c1") "]"}, codes, seqs);
    assert_int_equal(codes[0], FL_EALREADY_EXISTS);
    tu_verify_ok(f->s);
}

/* An append refused at its first event wrote nothing and leaves the group as it was: the
 * versions the appends before it moved on in this transaction still count for the appends
 * after it (the transaction's cache once went with the refusal, and the flow's version came
 * back from the last commit's: 2 where the stream held 3, a conflict on the right
 * expected_version, and verify failing). */
static void test_group_refusal_keeps_versions(void **state)
{
    struct tu_fx *f = *state;
    const char *const tenants[5] = {T, T, T, T, T};
    const char *const texts[5] = {
        "[{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"kv\",\"owner\":\"x\"}}]",
        "[{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"nosuch\"}}]",
        "[{\"type\":\"flow_updated\",\"expected_version\":2,\"data\":{\"flow_id\":\"kv\","
        "\"owner\":\"y\"}}]",
        "[{\"type\":\"flow_status\",\"expected_version\":9,\"data\":{\"flow_id\":\"kv\","
        "\"migration_status\":\"DONE\"}}]",
        "[{\"type\":\"flow_updated\",\"expected_version\":3,\"data\":{\"flow_id\":\"kv\","
        "\"owner\":\"z\"}}]",
    };
    int codes[5];
    uint64_t seqs[5];

    tu_commit_group(f->s, 1, tenants, (const char *const[]){"[" REG("kv") "]"}, codes, seqs);
    assert_int_equal(codes[0], 0);
    tu_commit_group(f->s, 5, tenants, texts, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], FL_ENOT_FOUND);
    assert_int_equal(codes[2], 0);
    assert_int_equal(codes[3], FL_ECONFLICT);
    assert_int_equal(codes[4], 0);
    json_t *st = tu_state(f->s, T, "kv", 0, NULL);
    assert_non_null(st);
    assert_int_equal(tu_int(st, "version"), 4);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "z");
    json_decref(st);
    tu_verify_ok(f->s);
}

/* The store caches committed names (tenant, flow and run numbers) across commit groups. A name
 * created in a group only counts once the group has committed: one created by an append that
 * failed (the group redone without it), or by a group that failed as a whole, must not be
 * found by the groups after it; names reused group after group keep their numbers; a rebuild
 * starts over, and one that stops at a missing record knows no name past it. */
static void test_names_across_groups(void **state)
{
    struct tu_fx *f = *state;
    const char *const tenants[4] = {T, T, "new:t", T};
    int codes[4];
    uint64_t seqs[4];
    struct fl_error e;
    uint64_t n = 0;

    /* 1: k1 and kr1 commit; k2, kr2, the tenant new:t and its k3 are undone */
    tu_commit_group(f->s, 3, tenants, (const char *const[]){
        "[" REG("k1") "," START("kr1", "k1") "]",
        "[" REG("k2") "," START("kr2", "k2") "," RSTATUS("nope", "RUNNING") "]",
        "[" REG("k3") "," RSTATUS("nope", "RUNNING") "]"}, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], FL_ENOT_FOUND);
    assert_int_equal(codes[2], FL_ENOT_FOUND);
    /* 2: none of the undone names exists; kr1 does */
    tu_commit_group(f->s, 4, tenants, (const char *const[]){
        "[" IT("kr2", 1, "generate_code", "RUNNING") "]",
        "[{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"k2\",\"owner\":\"x\"}}]",
        "[{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"k3\",\"owner\":\"x\"}}]",
        "[" IT("kr1", 1, "generate_code", "RUNNING") "]"}, codes, seqs);
    assert_int_equal(codes[0], FL_ENOT_FOUND);
    assert_int_equal(codes[1], FL_ENOT_FOUND);
    assert_int_equal(codes[2], FL_ENOT_FOUND);
    assert_int_equal(codes[3], 0);
    assert_int_equal(seqs[3], 3);
    /* 3: now they are created for real (kr2 on k1 this time) */
    tu_commit_group(f->s, 3, tenants, (const char *const[]){
        "[" REG("k2") "]", "[" START("kr2", "k1") "]", "[" REG("k3") "]"}, codes, seqs);
    for (int i = 0; i < 3; i++)
        assert_int_equal(codes[i], 0);
    /* 4..9: groups in a row reuse the names; every run, flow and version is where it should be */
    for (int g = 0; g < 6; g++) {
        char t0[256], t1[256], t2[256], t3[256];
        snprintf(t0, sizeof t0,
                 "[{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"kr1\",\"iteration_num\":%d,"
                 "\"step\":\"generate_code\",\"step_status\":\"RUNNING\"}}]", g + 2);
        snprintf(t1, sizeof t1,
                 "[{\"type\":\"iteration_step\",\"data\":{\"run_id\":\"kr2\",\"iteration_num\":%d,"
                 "\"step\":\"generate_code\",\"step_status\":\"RUNNING\"}}]", g + 1);
        snprintf(t2, sizeof t2,
                 "[{\"type\":\"flow_updated\",\"expected_version\":%d,\"data\":{\"flow_id\":\"k3\","
                 "\"owner\":\"o%d\"}}]", g + 1, g);
        snprintf(t3, sizeof t3,
                 "[{\"type\":\"flow_updated\",\"expected_version\":%d,\"data\":{\"flow_id\":\"k2\","
                 "\"owner\":\"o%d\"}}]", g + 1, g);
        tu_commit_group(f->s, 4, tenants, (const char *const[]){t0, t1, t2, t3}, codes, seqs);
        for (int i = 0; i < 4; i++)
            assert_int_equal(codes[i], 0);
        /* names a failing append creates in this group stay unknown to the next */
        tu_commit_group(f->s, 1, tenants, (const char *const[]){
            "[" REG("ghost") "," START("ghost-run", "k1") "," RSTATUS("nope", "RUNNING") "]"},
            codes, seqs);
        assert_int_equal(codes[0], FL_ENOT_FOUND);
        expect_err(f->s, RSTATUS("ghost-run", "RUNNING"), FL_ENOT_FOUND);
        expect_err(f->s, "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"ghost\",\"owner\":\"x\"}}",
                   FL_ENOT_FOUND);
    }
    expect_err(f->s, REG("k2"), FL_EALREADY_EXISTS);
    expect_err(f->s, START("kr2", "k2"), FL_EALREADY_EXISTS);
    json_t *st = tu_state(f->s, T, "k1", 0, &e);
    assert_non_null(st);
    assert_int_equal(json_array_size(tu_get(st, "migration_runs")), 2);
    json_decref(st);
    st = tu_state(f->s, "new:t", "k3", 0, &e);
    assert_non_null(st);
    assert_int_equal(tu_int(st, "version"), 7);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "o5");
    json_decref(st);
    /* a rebuild, then appends that use the names again */
    uint64_t head = fl_store_head(f->s);
    assert_int_equal(fl_store_rebuild(f->s, &n, &e), 0);
    assert_int_equal(n, head);
    ok(f->s, IT("kr1", 9, "generate_code", "RUNNING"));
    ok(f->s, START("kr3", "k2"));
    expect_err(f->s, START("kr2", "k1"), FL_EALREADY_EXISTS);
    expect_err(f->s, REG("k1"), FL_EALREADY_EXISTS);
    assert_int_equal(tu_append(f->s, "new:t", "{\"type\":\"flow_updated\",\"expected_version\":7,"
                               "\"data\":{\"flow_id\":\"k3\",\"owner\":\"z\"}}", NULL, 0, &e), 0);
    tu_verify_ok(f->s);
    /* a rebuild stopped by a missing record (k9 is registered after it) knows no name past it */
    head = fl_store_head(f->s);
    ok(f->s, REG("k9"));
    void *rec;
    size_t len;
    assert_int_equal(fl_store_debug_get_raw(f->s, head, &rec, &len), 0);
    assert_int_equal(fl_store_debug_put_raw(f->s, head, NULL, 0), 0);
    assert_int_not_equal(fl_store_rebuild(f->s, &n, &e), 0);
    /* k9 is unknown, so its registration passes and the append fails at its second event
     * (nothing is committed); so is k1, as the rebuild's one chunk did not commit: the
     * projections are empty */
    tu_commit_group(f->s, 2, tenants, (const char *const[]){
        "[" REG("k9") "," RSTATUS("nope", "RUNNING") "]",
        "[" REG("k1") "," RSTATUS("nope", "RUNNING") "]"}, codes, seqs);
    assert_int_equal(codes[0], FL_ENOT_FOUND);
    assert_int_equal(codes[1], FL_ENOT_FOUND);
    assert_int_equal(fl_store_debug_put_raw(f->s, head, rec, len), 0);
    free(rec);
    assert_int_equal(fl_store_rebuild(f->s, &n, &e), 0);
    expect_err(f->s, REG("k9"), FL_EALREADY_EXISTS);
    ok(f->s, START("kr9", "k9"));
    tu_verify_ok(f->s);
}

/* A group that fails as a whole (here: the map is full at its limit) commits nothing, so the
 * names it created must not be found afterwards. */
static void test_names_failed_group(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir, .nosync = 1, .map_size = 128 * 1024,
                              .max_map_size = 128 * 1024};
    const char *const tenants[2] = {T, "big:t"};
    struct fl_store *s;
    struct fl_error e;
    int codes[2];
    uint64_t seqs[2];
    static char big[100000];
    size_t at = 0;

    (void)state;
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    ok(s, REG("m0"));
    at += (size_t)snprintf(big + at, sizeof big - at, "[");
    for (int i = 0; i < 8; i++)
        at += (size_t)snprintf(big + at, sizeof big - at,
                               "%s{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"big-%d\","
                               "\"flow_name\":\"%010000d\"}}", i ? "," : "", i, i);
    snprintf(big + at, sizeof big - at, "]");
    /* 128 KiB cannot take 8 rows of 10000 bytes, their versions and records: the group fails */
    tu_commit_group(s, 2, tenants, (const char *const[]){"[" REG("m1") "]", big}, codes, seqs);
    assert_int_equal(codes[0], FL_EUNAVAILABLE);
    assert_int_equal(codes[1], FL_EUNAVAILABLE);
    assert_int_equal(fl_store_head(s), 1);
    /* m1 and big:t were never committed: m1 registers now, in a group that fits */
    ok(s, REG("m1"));
    ok(s, START("mr1", "m1"));
    assert_int_equal(tu_append(s, "big:t", "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"big-0\"}}",
                               NULL, 0, &e), FL_ENOT_FOUND);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A group whose journal flush fails (here: the journal may not grow, RLIMIT_FSIZE) commits
 * nothing, though its appends all passed: the names they created must not be found after. */
#define FX "[{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"fx-%d\",\"flow_name\":\"x\"}}]"
static void test_names_failed_flush(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 0);
    const char *const tenants[2] = {T, "pad:t"};
    char path[4200], name[128], pad[12000];
    struct rlimit old, lim;
    struct stat st;
    int codes[2], failed = 0;
    uint64_t seqs[2];

    (void)state;
    ok(s, REG("f0"));
    snprintf(path, sizeof path, "%s/journal", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size; /* the journal's blocks so far, and no more */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    for (int i = 0; i < 40 && !failed; i++) {
        uint64_t head = fl_store_head(s);
        snprintf(name, sizeof name, FX, i);
        snprintf(pad, sizeof pad, "[{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"pad-%d\","
                 "\"flow_name\":\"%08000d\"}}]", i, i);
        tu_commit_group(s, 2, tenants, (const char *const[]){name, pad}, codes, seqs);
        if (codes[0] != 0 || codes[1] != 0)
            failed = i + 1;
        if (failed && (codes[0] == 0 || codes[1] == 0 || fl_store_head(s) != head))
            failed = -1; /* only part of the group failed, or something was committed */
    }
    setrlimit(RLIMIT_FSIZE, &old); /* before any assertion: the tests after need it */
    signal(SIGXFSZ, SIG_DFL);
    assert_true(failed > 0); /* the journal had to grow within 40 records of 8 KB */
    /* fx-N and pad:t's pad-N were never committed: they register now */
    snprintf(name, sizeof name, FX, failed - 1);
    snprintf(pad, sizeof pad,
             "[{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"pad-%d\",\"flow_name\":\"x\"}}]",
             failed - 1);
    tu_commit_group(s, 2, tenants, (const char *const[]){name, pad}, codes, seqs);
    assert_int_equal(codes[0], 0);
    assert_int_equal(codes[1], 0);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

static void test_rollback(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;
    struct fl_ack a;

    ok(f->s, REG("f1"));                                    /* 1 */
    ok(f->s, START("r1", "f1"));                            /* 2 */
    ok(f->s, IT("r1", 1, "generate_code", "RUNNING"));      /* 3 */
    ok(f->s, PATCH("r1", 1, "p.py"));                       /* 4 */
    ok(f->s, RSTATUS("r1", "FAILED"));                      /* 5 */
    ok(f->s, START("r2", "f1"));                            /* 6 */
    ok(f->s, REG("other"));                                 /* 7 */
    json_t *at3 = tu_state(f->s, T, "f1", 3, &e);
    expect_err(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":8,\"reason\":\"x\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"other\",\"to_seq\":3,\"reason\":\"x\"}}", FL_EBAD_REQUEST);
    expect_err(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"nope\",\"to_seq\":3,\"reason\":\"x\"}}", FL_ENOT_FOUND);
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":3,\"reason\":\"bad patch\"}}", &a, 1, &e), 0); /* 8 */
    json_t *now = tu_state(f->s, T, "f1", 0, &e);
    /* rows equal their state right after seq 3, except last_update_ts */
    assert_int_equal(tu_int(now, "migration_flows/0/last_update_ts"), a.ts);
    json_object_set_new(tu_get(now, "migration_flows/0"), "last_update_ts", json_null());
    json_object_set_new(tu_get(at3, "migration_flows/0"), "last_update_ts", json_null());
    for (const char **t = (const char *[]){"migration_flows", "migration_runs", "migration_iterations",
                                          "migration_patches", "attempt_history", NULL}; *t; t++)
        assert_true(json_equal(json_object_get(now, *t), json_object_get(at3, *t)));
    assert_int_equal(json_array_size(tu_get(now, "migration_patches")), 0);
    assert_int_equal(json_array_size(tu_get(now, "migration_runs")), 1);
    assert_int_equal(tu_int(now, "version"), 7); /* the rollback itself is an event of the stream */
    json_decref(now);
    json_decref(at3);
    /* as-of before the rollback still sees the old rows */
    json_t *at6 = tu_state(f->s, T, "f1", 6, &e);
    assert_int_equal(json_array_size(tu_get(at6, "migration_runs")), 2);
    assert_int_equal(tu_int(at6, "version"), 6);
    json_decref(at6);
    /* r2 is gone from the projection but its id stays used */
    expect_err(f->s, RSTATUS("r2", "SUCCESS"), FL_ENOT_FOUND);
    expect_err(f->s, START("r2", "f1"), FL_EALREADY_EXISTS);
    ok(f->s, START("r9", "f1")); /* 9: attempt 2 again */
    json_t *st = tu_state(f->s, T, "f1", 0, &e);
    assert_int_equal(tu_int(st, "migration_flows/0/total_attempts"), 2);
    assert_int_equal(tu_int(st, "attempt_history/0/attempt_number"), 2);
    json_decref(st);
    /* roll back to before the first rollback, then forward again to after it */
    ok(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":6,\"reason\":\"undo\"}}"); /* 10 */
    st = tu_state(f->s, T, "f1", 0, &e);
    assert_int_equal(json_array_size(tu_get(st, "migration_runs")), 2);
    assert_int_equal(json_array_size(tu_get(st, "migration_patches")), 1);
    json_decref(st);
    ok(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":9,\"reason\":\"redo\"}}"); /* 11 */
    st = tu_state(f->s, T, "f1", 0, &e);
    assert_int_equal(json_array_size(tu_get(st, "migration_runs")), 2);
    assert_string_equal(tu_str(st, "migration_runs/1/run_id"), "r9");
    json_decref(st);
    tu_verify_ok(f->s);
}

static void test_history_tables_log(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;

    ok(f->s, REG("f1"));
    ok(f->s, REG("f2"));
    for (int i = 0; i < 25; i++)
        assert_int_equal(tu_appendf(f->s, T, &e, "[{\"type\":\"run_started\",\"data\":{\"run_id\":\"f1_run_%02d\",\"flow_id\":\"f1\",\"job_run_id\":\"j%d\"}},"
                                    "{\"type\":\"run_status\",\"data\":{\"run_id\":\"f1_run_%02d\",\"status\":\"%s\"}}]",
                                    i, i, i, i % 2 ? "SUCCESS" : "FAILED"), 0);
    json_t *h = tu_history(f->s, T, "f1", 0, &e);
    assert_int_equal(tu_int(h, "count"), 20);
    assert_int_equal(tu_int(h, "history/0/attempt_number"), 25);
    assert_string_equal(tu_str(h, "history/0/attempt_id"), "f1_run_24");
    assert_int_equal(tu_int(h, "history/19/attempt_number"), 6);
    json_decref(h);
    h = tu_history(f->s, T, "f1", 3, &e);
    assert_int_equal(json_array_size(tu_get(h, "history")), 3);
    json_decref(h);
    assert_null(tu_history(f->s, T, "nope", 3, &e));
    assert_int_equal(e.code, FL_ENOT_FOUND);

    json_t *t = tu_table(f->s, T, "migration_runs", "status", "SUCCESS", &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 12);
    json_decref(t);
    t = tu_table(f->s, T, "migration_runs", "job_run_id", "j7", &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 1);
    assert_string_equal(tu_str(t, "rows/0/run_id"), "f1_run_07");
    json_decref(t);
    t = tu_table(f->s, T, "migration_flows", "flow_name", "f2.xml", &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 1);
    json_decref(t);
    t = tu_table(f->s, T, "migration_flows", "migration_status", "NOT_STARTED", &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 1);
    json_decref(t);
    t = tu_table(f->s, T, "migration_flows", NULL, NULL, &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 2);
    json_decref(t);
    assert_null(tu_table(f->s, T, "migration_flows", "owner", "x", &e));
    assert_int_equal(e.code, FL_EBAD_REQUEST);
    assert_null(tu_table(f->s, T, "flows", NULL, NULL, &e));
    assert_int_equal(e.code, FL_EBAD_REQUEST);
    /* another tenant sees nothing */
    t = tu_table(f->s, "intruder", "migration_runs", NULL, NULL, &e);
    assert_int_equal(json_array_size(tu_get(t, "rows")), 0);
    json_decref(t);
    assert_null(tu_state(f->s, "intruder", "f1", 0, &e));
    assert_int_equal(e.code, FL_ENOT_FOUND);

    struct fl_log_filter lf = {.type = -1};
    json_t *l = tu_log(f->s, T, &lf, &e);
    assert_int_equal(json_array_size(tu_get(l, "events")), 52);
    assert_int_equal(tu_int(l, "next"), 53);
    assert_int_equal(tu_int(l, "head"), 52);
    json_decref(l);
    lf.run_id = tu_s("f1_run_03");
    l = tu_log(f->s, T, &lf, &e);
    assert_int_equal(json_array_size(tu_get(l, "events")), 2);
    assert_string_equal(tu_str(l, "events/1/data/status"), "SUCCESS");
    json_decref(l);
    lf.run_id = tu_s(NULL);
    lf.flow_id = tu_s("f2");
    l = tu_log(f->s, T, &lf, &e);
    assert_int_equal(json_array_size(tu_get(l, "events")), 1);
    json_decref(l);
    lf.flow_id = tu_s(NULL);
    lf.type = FL_EV_RUN_STATUS;
    lf.from = 10;
    lf.limit = 5;
    l = tu_log(f->s, T, &lf, &e);
    assert_int_equal(json_array_size(tu_get(l, "events")), 5);
    assert_int_equal(tu_int(l, "events/0/seq"), 10);
    json_decref(l);
    lf = (struct fl_log_filter){.type = -1};
    l = tu_log(f->s, "intruder", &lf, &e);
    assert_int_equal(json_array_size(tu_get(l, "events")), 0);
    json_decref(l);
}

static void test_as_of_time(void **state)
{
    struct tu_fx *f = *state;
    struct fl_ack a1, a2;
    struct fl_error e;
    msgpack_sbuffer sb;
    msgpack_packer pk;

    assert_int_equal(tu_append(f->s, T, REG("f1"), &a1, 1, &e), 0);
    usleep(2000);
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_status\",\"data\":{\"flow_id\":\"f1\",\"migration_status\":\"DONE\"}}", &a2, 1, &e), 0);
    assert_true(a2.ts > a1.ts);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(fl_query_state(f->s, tu_s(T), tu_s("f1"), 0, 1, a2.ts - 1, &pk, &e), 0);
    assert_int_equal(fl_query_state(f->s, tu_s(T), tu_s("f1"), 0, 1, a1.ts - 1, &pk, &e), FL_ENOT_FOUND);
    msgpack_sbuffer_destroy(&sb);
    json_t *st = tu_state(f->s, T, "f1", 1, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/migration_status"), "NOT_STARTED");
    json_decref(st);
    assert_null(tu_state(f->s, T, "f1", 99, &e));
    assert_int_equal(e.code, FL_EBAD_REQUEST);
}

static void test_map_growth(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir, .nosync = 1, .map_size = 64 * 1024};
    struct fl_store *s;
    struct fl_error e;

    (void)state;
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(tu_appendf(s, T, &e, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"flow-%d\",\"flow_name\":\"%0400d\"}}", i, i), 0);
    assert_int_equal(fl_store_head(s), 300);
    /* LMDB writes through a shared map of data.mdb (MDB_WRITEMAP): every byte of the map must
     * have a disk block behind it, or a full disk would be SIGBUS instead of an error. The map
     * grew (64 KiB cannot hold 300 rows of 400 bytes) and the file is the map, with no hole. */
    char path[4200];
    struct stat fst;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(stat(path, &fst), 0);
    assert_true(fst.st_size > 64 * 1024);
    assert_true((long long)fst.st_blocks * 512 >= (long long)fst.st_size);
    json_t *st = tu_state(s, T, "flow-299", 0, &e);
    assert_non_null(st);
    json_decref(st);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A verify works on a snapshot of its own, without the store's lock: commits go on while it
 * runs, a commit that must grow the map waits for it (LMDB may not be remapped under an open
 * read handle), and the report is of the snapshot. The hook holds the verify right after it
 * took its snapshot; were the lock still held, the first append below would never return
 * (alarm turns that into a failure). */
/* Set by growing_appends once its appends all returned. */
struct grower {
    struct fl_store *s;
    pthread_mutex_t mu;
    int grown;
};

/* Rows of 400-byte names, [from, to): enough of them outgrow any map they start in. */
static const char *big_rows(struct fl_store *s, int from, int to)
{
    struct fl_error e;

    for (int i = from; i < to; i++)
        if (tu_appendf(s, T, &e, "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"big-%d\",\"flow_name\":\"%0400d\"}}", i, i) != 0)
            return "append failed";
    return NULL;
}

/* A store (not synced) in dir, with big_rows [0, rows). */
static struct fl_store *big_store(const char *dir, int rows)
{
    struct fl_store_opts o = {.dir = dir, .nosync = 1};
    struct fl_store *s;
    struct fl_error e;

    if (fl_store_open(&s, &o, &e) != 0)
        fail_msg("open %s: %s", dir, e.msg);
    assert_null(big_rows(s, 0, rows));
    return s;
}

static void *growing_appends(void *arg)
{
    struct grower *h = arg;
    const char *bad = big_rows(h->s, 300, 1500);

    if (bad)
        return (void *)bad;
    pthread_mutex_lock(&h->mu);
    h->grown = 1;
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static void test_verify_beside_commits(void **state)
{
    char *dir = tu_tmpdir();
    /* 1 MiB: room for the first 300 rows and the two small appends; the 1,200 rows after must
     * grow the map. (A growth before the verify would add at least 64 MiB and leave them none
     * to wait for.) */
    struct fl_store_opts o = {.dir = dir, .nosync = 1, .map_size = 1024 * 1024};
    struct grower g = {.mu = PTHREAD_MUTEX_INITIALIZER};
    struct tu_held h;
    struct fl_store *s;
    pthread_t gt;
    struct fl_error e;
    void *gret;

    (void)state;
    alarm(60);
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    g.s = s;
    assert_null(big_rows(s, 0, 300));
    ok(s, REG("f1"));
    ok(s, START("r1", "f1"));
    uint64_t head0 = fl_store_head(s);
    uint64_t growths0 = s->map_growths;
    assert_int_equal(growths0, 0); /* so the appends below have a growth to wait for */
    tu_held_start(&h, s);

    ok(s, REG("f2")); /* the verify holds its snapshot: commits go on */
    ok(s, RSTATUS("r1", "RUNNING"));
    assert_int_equal(fl_store_head(s), head0 + 2);
    json_t *st = tu_state(s, T, "f2", 0, &e);
    assert_non_null(st);
    json_decref(st);
    /* These need a larger map: they wait for the verify to end. */
    assert_int_equal(pthread_create(&gt, NULL, growing_appends, &g), 0);
    usleep(200 * 1000);
    pthread_mutex_lock(&g.mu);
    assert_false(g.grown);
    pthread_mutex_unlock(&g.mu);
    json_t *report = tu_held_finish(&h);
    assert_int_equal(pthread_join(gt, &gret), 0);
    if (gret)
        fail_msg("%s", (const char *)gret);

    assert_non_null(report);
    assert_true(json_is_true(json_object_get(report, "ok")));
    assert_int_equal(tu_int(report, "head_seq"), head0); /* the snapshot's, not later */
    json_decref(report);
    assert_int_equal(fl_store_head(s), head0 + 2 + 1200);
    assert_true(s->map_growths > growths0); /* the appends that waited did grow the map */
    tu_verify_ok(s);
    alarm(0);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* Open dir's LMDB environment behind the store's back (the store closed), and begin a
 * transaction in it: for tests that stamp or plant what an older flowlog would have left. */
static MDB_txn *raw_begin(const char *dir, unsigned flags, MDB_env **env)
{
    MDB_txn *txn;

    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 16);
    assert_int_equal(mdb_env_open(*env, dir, flags, 0600), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, flags & MDB_RDONLY, &txn), 0);
    return txn;
}

static void test_format_and_reopen(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    struct fl_store_opts o = {.dir = dir};
    struct fl_error e;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;

    (void)state;
    ok(s, REG("f1"));
    fl_store_close(s);
    s = tu_open(dir, 1);
    assert_int_equal(fl_store_head(s), 1);
    ok(s, REG("f2")); /* the chain continues across restarts */
    tu_verify_ok(s);
    fl_store_close(s);
    /* stamp an unknown format: opening must refuse with a clear message */
    txn = raw_begin(dir, 0, &env);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {6, "format"}, val = {15, "flowlog-store-9"};
    assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_not_equal(fl_store_open(&s, &o, &e), 0);
    assert_non_null(strstr(e.msg, "flowlog-store-9"));
    tu_rmdir(dir);
    free(dir);
}

/* A store of the previous format (flowlog-store-3: row versions were keys of their own) has
 * the same log and journal: opening it stamps the new format and rebuilds the projections from
 * the log. Played here with a store of this format stamped 3 and given a stray old-style
 * version key: were it not rebuilt, verify would find that key. */
static void test_upgrade_format_3(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    size_t l1, l2;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta, flows;
    int rc;

    (void)state;
    ok(s, REG("f1"));
    ok(s, START("r1", "f1"));
    ok(s, PATCH("r1", 1, "a.py"));
    char *before = tu_state_raw(s, T, "f1", 2, &l1, &rc);
    assert_non_null(before);
    fl_store_close(s);
    txn = raw_begin(dir, 0, &env);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_dbi_open(txn, "flows", 0, &flows), 0);
    MDB_val k = {6, "format"}, val = {15, "flowlog-store-3"};
    assert_int_equal(mdb_put(txn, meta, &k, &val, 0), 0);
    uint8_t old[18] = {0, 0, 0, 0, 0, 0, 0, 2, 'S', 0, 0, 0, 0, 0, 0, 0, 3, 0};
    MDB_val ok_ = {sizeof old, old}, row = {3, "old"};
    assert_int_equal(mdb_put(txn, flows, &ok_, &row, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = tu_open(dir, 1);
    char *after = tu_state_raw(s, T, "f1", 2, &l2, &rc);
    assert_non_null(after);
    assert_int_equal(l1, l2);
    assert_memory_equal(before, after, l1);
    tu_verify_ok(s);
    ok(s, PATCH("r1", 1, "b.py"));
    fl_store_close(s);
    /* stamped with the new format: a second open does not rebuild (nor need to) */
    txn = raw_begin(dir, MDB_RDONLY, &env);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_get(txn, meta, &k, &val), 0);
    assert_int_equal(val.mv_size, 15);
    assert_memory_equal(val.mv_data, "flowlog-store-4", 15);
    MDB_val pk = {15, "rebuild_pending"};
    assert_int_equal(mdb_get(txn, meta, &pk, &val), MDB_NOTFOUND);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    free(before);
    free(after);
    tu_rmdir(dir);
    free(dir);
}

/* LMDB's default order, as mdb_cmp_memn has it: bytewise over the shorter length, then the
 * shorter key first. */
static int default_order(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = n ? memcmp(a->mv_data, b->mv_data, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return a->mv_size < b->mv_size ? -1 : a->mv_size > b->mv_size;
}

/* The store's comparator must be LMDB's default order exactly (tools without it read the same
 * trees): random keys of 0..20 bytes over a few byte values, so that prefixes, ties and every
 * length against every other come up. Seeded; FLOWLOG_SEED replays. */
static void test_key_order(void **state)
{
    static const uint8_t alphabet[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff};
    uint64_t seed = tu_seed(), x = seed | 1;
    uint8_t ka[20], kb[20];

    (void)state;
    for (int i = 0; i < 400000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        MDB_val a = {x % 21, ka}, b = {(x >> 8) % 21, kb};
        for (size_t j = 0; j < 20; j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            ka[j] = alphabet[x % 6];
            kb[j] = (x >> 16) % 4 ? ka[j] : alphabet[(x >> 8) % 6]; /* mostly a shared prefix */
        }
        int want = default_order(&a, &b), got = fl_store_key_cmp(&a, &b);
        got = got < 0 ? -1 : got > 0;
        if (got != want)
            fail_msg("seed %llu, case %d: %zu vs %zu bytes compare %d, LMDB's order says %d",
                     (unsigned long long)seed, i, a.mv_size, b.mv_size, got, want);
    }
}

static void test_rebuild(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;
    uint64_t n = 0;
    size_t l1, l2;
    int rc;

    ok(f->s, REG("f1"));
    ok(f->s, START("r1", "f1"));
    ok(f->s, PATCH("r1", 1, "a.py"));
    ok(f->s, "{\"type\":\"flow_rollback\",\"data\":{\"flow_id\":\"f1\",\"to_seq\":2,\"reason\":\"x\"}}");
    /* data kept as appended (another key order, a null) replays like any other */
    ok(f->s, "{\"type\":\"flow_updated\",\"event_id\":\"u1\",\"data\":{\"owner\":\"o\",\"server\":null,\"flow_id\":\"f1\"}}");
    char *before = tu_state_raw(f->s, T, "f1", 0, &l1, &rc);
    assert_int_equal(fl_store_rebuild(f->s, &n, &e), 0);
    assert_int_equal(n, 5);
    char *after = tu_state_raw(f->s, T, "f1", 0, &l2, &rc);
    assert_int_equal(l1, l2);
    assert_memory_equal(before, after, l1);
    free(before);
    free(after);
    ok(f->s, PATCH("r1", 1, "b.py"));
    tu_verify_ok(f->s);
    /* after the rebuild its retry in the canonical form is still a duplicate */
    struct fl_ack a;
    assert_int_equal(tu_append(f->s, T, "{\"type\":\"flow_updated\",\"event_id\":\"u1\",\"data\":{\"flow_id\":\"f1\",\"owner\":\"o\"}}", &a, 1, &e), 0);
    assert_int_equal(a.duplicate, 1);
    assert_int_equal(a.seq, 5);
}

/* A rebuild builds the projections in the pages their drop freed: the store does not grow.
 * (Its first chunk took all of its pages new from the end of the map while the log's reader
 * held the drop's snapshot, which keeps those pages from reuse; bench/RESULTS.md set N.) */
static void test_rebuild_reuses_pages(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = big_store(dir, 3000);
    struct fl_error e;
    uint64_t n = 0;

    (void)state;
    uint64_t before = tu_stat_u64(s, "pages_used");
    for (int round = 0; round < 3; round++) {
        assert_int_equal(fl_store_rebuild(s, &n, &e), 0);
        assert_int_equal(n, 3000);
        uint64_t after = tu_stat_u64(s, "pages_used");
        /* The projections take most of the pages (rows of 400 bytes, stream, index); a
         * rebuild into new pages would add about as many again. */
        if (after > before + before / 10)
            fail_msg("rebuild %d: %llu pages used, %llu before: the dropped pages were not "
                     "reused", round + 1, (unsigned long long)after,
                     (unsigned long long)before);
    }
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A reopened store's map is exactly its used pages (LMDB takes the larger of the size asked
 * and the data's), so the rebuild's first commit, which drops the projections and must write
 * their freed pages' list, finds the map full: it grows the map and goes on. (It failed with
 * "the store reached its maximum size", so that a store left with a rebuild pending by a crash
 * could not be opened again.) */
static void test_rebuild_after_reopen(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir, .nosync = 1};
    struct fl_store *s = big_store(dir, 3000);
    struct fl_error e;
    uint64_t n = 0;

    (void)state;
    fl_store_close(s);
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    if (fl_store_rebuild(s, &n, &e) != 0)
        fail_msg("rebuild after reopen: %s", e.msg);
    assert_int_equal(n, 3000);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A pipelined commit (fl_store_apply) is invisible to reads until fl_store_sync makes it
 * durable; a group of duplicates waits for its originals; fl_store_commit and a close flush
 * whatever is in flight. */
static void test_views_durable_only(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store *s = tu_open(dir, 1);
    struct fl_error e;
    struct fl_ack ack;
    uint64_t need = 0, durable = 0;
    json_t *st;

    (void)state;
    assert_int_equal(tu_append(s, "t", REG("f1"), NULL, 0, &e), 0);
    assert_int_equal(fl_store_head(s), 1);
    const char *upd = "{\"type\":\"flow_updated\",\"event_id\":\"u1\",\"data\":{\"flow_id\":\"f1\","
                      "\"owner\":\"o2\"}}";
    assert_int_equal(tu_apply(s, "t", upd, &ack, 1, &need, &e), 0);
    assert_int_equal(ack.seq, 2);
    assert_int_equal(need, 2);
    /* applied, not durable: reads still see seq 1 */
    assert_int_equal(fl_store_head(s), 1);
    st = tu_state(s, "t", "f1", 0, &e);
    assert_non_null(st);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "pod-a");
    json_decref(st);
    assert_int_equal(fl_store_sync(s, &durable, &e), 0);
    assert_int_equal(durable, 2);
    assert_int_equal(fl_store_head(s), 2);
    st = tu_state(s, "t", "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "o2");
    json_decref(st);
    /* the same event again: a duplicate, answered once its original is durable (it is) */
    assert_int_equal(tu_apply(s, "t", upd, &ack, 1, &need, &e), 0);
    assert_true(ack.duplicate);
    assert_int_equal(ack.seq, 2);
    assert_int_equal(need, 2);
    /* in flight, then a synchronous commit: one flush makes both durable */
    assert_int_equal(tu_apply(s, "t", "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\","
                                      "\"owner\":\"o3\"}}",
                              NULL, 0, &need, &e),
                     0);
    assert_int_equal(need, 3);
    assert_int_equal(fl_store_head(s), 2);
    assert_int_equal(tu_append(s, "t", "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\","
                                       "\"owner\":\"o4\"}}",
                               NULL, 0, &e),
                     0);
    assert_int_equal(fl_store_head(s), 4);
    /* nothing in flight now: a one-step commit writes the journal directly again, over the
     * partial block the page-cache writes left (verify below compares journal and log) */
    assert_int_equal(tu_append(s, "t", "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\","
                                       "\"owner\":\"o5\"}}",
                               NULL, 0, &e),
                     0);
    assert_int_equal(fl_store_head(s), 5);
    /* in flight at close: the close flushes it, the reopened store has it */
    assert_int_equal(tu_apply(s, "t", "{\"type\":\"flow_updated\",\"data\":{\"flow_id\":\"f1\","
                                      "\"owner\":\"o6\"}}",
                              NULL, 0, &need, &e),
                     0);
    fl_store_close(s);
    s = tu_open(dir, 1);
    assert_int_equal(fl_store_head(s), 6);
    st = tu_state(s, "t", "f1", 0, &e);
    assert_string_equal(tu_str(st, "migration_flows/0/owner"), "o6");
    json_decref(st);
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* Pipelined commits that fill the map: the growth flushes what is in flight itself (no
 * snapshot may stay open across it) and nothing is lost or shown early. */
static void test_views_across_map_growth(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir};
    struct fl_store *s;
    struct fl_error e;
    uint64_t need = 0, durable = 0, shown = 0;
    char text[2048], name[1201];

    (void)state;
    o.lim.max_event = FL_DEFAULT_MAX_EVENT;
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    memset(name, 'x', 1200);
    name[1200] = '\0';
    for (int i = 0; i < 3000; i++) {
        snprintf(text, sizeof text,
                 "{\"type\":\"flow_registered\",\"data\":{\"flow_id\":\"g%d\",\"flow_name\":\"%s\"}}",
                 i, name);
        if (tu_apply(s, "t", text, NULL, 0, &need, &e) != 0)
            fail_msg("apply %d: %s", i, e.msg);
        assert_int_equal(need, (uint64_t)i + 1);
        uint64_t h = fl_store_head(s);
        assert_true(h >= shown && h <= need); /* never ahead of what was applied, never back */
        shown = h;
        if (i % 7 == 6) {
            assert_int_equal(fl_store_sync(s, &durable, &e), 0);
            assert_int_equal(durable, need);
        }
    }
    assert_int_equal(fl_store_sync(s, &durable, &e), 0);
    assert_int_equal(durable, 3000);
    /* the map did grow (from 1 MiB; data.mdb is as large as the map) */
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_true(sb.st_size > (off_t)(1 << 20));
    tu_verify_ok(s);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

/* A rebuild replays on two threads (one decodes ahead); a record it cannot replay still stops
 * it at that very seq, with that seq in the message, and nothing after it is applied. */
static void test_rebuild_stops_at_bad_record(void **state)
{
    char *dir = tu_tmpdir();
    struct fl_store_opts o = {.dir = dir, .nosync = 1};
    struct fl_store *s;
    struct fl_error e;
    uint64_t n = 0;
    const uint8_t junk[] = {0x93, 0x01, 0x02, 0x03};

    (void)state;
    assert_int_equal(fl_store_open(&s, &o, &e), 0);
    assert_null(big_rows(s, 0, 2000));
    /* a record that decodes as msgpack but is no record */
    assert_int_equal(fl_store_debug_put_raw(s, 1234, junk, sizeof junk), 0);
    fl_error_clear(&e);
    assert_int_not_equal(fl_store_rebuild(s, &n, &e), 0);
    if (!strstr(e.msg, "seq 1234:"))
        fail_msg("rebuild error does not name seq 1234: %s", e.msg);
    assert_true(n < 1234);
    /* a missing record */
    assert_int_equal(fl_store_debug_put_raw(s, 1234, NULL, 0), 0);
    fl_error_clear(&e);
    assert_int_not_equal(fl_store_rebuild(s, &n, &e), 0);
    if (!strstr(e.msg, "seq 1234: record missing"))
        fail_msg("rebuild error does not name the missing seq 1234: %s", e.msg);
    fl_store_close(s);
    tu_rmdir(dir);
    free(dir);
}

static void test_backup(void **state)
{
    struct tu_fx *f = *state;
    struct fl_error e;
    uint64_t bytes = 0, head = 0;
    size_t l1, l2;
    int rc;
    char copy[4200];

    ok(f->s, REG("f1"));
    ok(f->s, START("r1", "f1"));
    ok(f->s, PATCH("r1", 1, "a.py"));
    snprintf(copy, sizeof copy, "%s/backup-1", f->dir);
    assert_int_equal(fl_store_backup(f->s, copy, &bytes, &head, &e), 0);
    assert_true(bytes > 0);
    assert_int_equal(head, 3);
    {
        /* it holds every tenant's data: owner-only, like the store (umask or not) */
        char path[4300];
        struct stat st;
        snprintf(path, sizeof path, "%s/data.mdb", copy);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        snprintf(path, sizeof path, "%s/journal", copy);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    assert_int_equal(fl_store_backup(f->s, copy, &bytes, &head, &e), FL_EALREADY_EXISTS);
    ok(f->s, RSTATUS("r1", "SUCCESS")); /* after the copy: not in it */
    struct fl_store *b = tu_open(copy, 0);
    assert_int_equal(fl_store_head(b), 3);
    char *orig = tu_state_raw(f->s, T, "f1", 3, &l1, &rc);
    char *back = tu_state_raw(b, T, "f1", 0, &l2, &rc);
    assert_int_equal(l1, l2);
    assert_memory_equal(orig, back, l1);
    tu_verify_ok(b);
    ok(b, RSTATUS("r1", "FAILED")); /* the copy is a working store of its own */
    free(orig);
    free(back);
    fl_store_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flow_registered, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_flow_updated_and_status, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_run_lifecycle, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_child_tables, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_form_errors, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_absent_fields_keep, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_expected_version, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_batches, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_batch_first_bad_event, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_outcomes, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_nul_heavy_ids, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_refusal_keeps_versions, tu_fx_setup,
                                        tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_after_failed_append, tu_fx_setup,
                                        tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_names_across_groups, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test(test_names_failed_group),
        cmocka_unit_test(test_names_failed_flush),
        cmocka_unit_test_setup_teardown(test_rollback, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_tables_log, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_as_of_time, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test(test_key_order),
        cmocka_unit_test(test_rebuild_reuses_pages),
        cmocka_unit_test(test_rebuild_after_reopen),
        cmocka_unit_test(test_upgrade_format_3),
        cmocka_unit_test_setup_teardown(test_rebuild, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test_setup_teardown(test_backup, tu_fx_setup, tu_fx_teardown),
        cmocka_unit_test(test_map_growth),
        cmocka_unit_test(test_views_durable_only),
        cmocka_unit_test(test_rebuild_stops_at_bad_record),
        cmocka_unit_test(test_views_across_map_growth),
        cmocka_unit_test(test_verify_beside_commits),
        cmocka_unit_test(test_format_and_reopen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
