/* schema.h: the contract's event types, their fields, and the seven tables, as data.
 *
 * CONTRACT.md section 2 is written down here once, as tables; event.c validates against them and
 * project.c writes rows whose columns are listed here. Nothing else spells a field name. */
#ifndef FL_SCHEMA_H
#define FL_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

/* Event types, in the contract's order. The numeric values are stored nowhere (the log keeps
 * the type's name), so they may change between versions. */
enum fl_event_type {
    FL_EV_FLOW_REGISTERED,
    FL_EV_FLOW_UPDATED,
    FL_EV_FLOW_STATUS,
    FL_EV_RUN_STARTED,
    FL_EV_RUN_STATUS,
    FL_EV_ITERATION_STEP,
    FL_EV_PATCH,
    FL_EV_SCAN_VERDICT,
    FL_EV_EXEC_RESULT,
    FL_EV_HUMAN_REQUEST,
    FL_EV_HUMAN_RESOLUTION,
    FL_EV_FLOW_ROLLBACK,
    FL_EV_COUNT
};

/* How a field's value is checked. */
enum fl_field_kind {
    FL_FK_ID,   /* string, 1..256 bytes */
    FL_FK_TEXT, /* string, 0..64 KiB */
    FL_FK_STEP, /* string, 1..64 bytes */
    FL_FK_JSON, /* string, up to 1 MiB, must parse as JSON */
    FL_FK_ENUM, /* string, one of enum_values */
    FL_FK_INT,  /* integer in [min, max] */
};

#define FL_ID_MAX 256
/* An id that is part of a row's primary key (artifact_ref) sits in storage keys escaped, each
 * NUL byte as two (util.h, keystr); its bytes plus its NULs may be at most this many, so that
 * the longest key holding it stays within LMDB's 511 bytes (project.c, idx_key: 26 bytes of
 * prefix, 12 of run and iteration, 2 of terminator). Only ids of more than 215 NULs meet it. */
#define FL_ID_KEY_MAX 471
#define FL_TEXT_MAX (64 * 1024)
#define FL_STEP_MAX 64
#define FL_JSON_MAX (1024 * 1024)
#define FL_EVENT_ID_MAX 128
#define FL_TENANT_MAX 64
#define FL_MAX_FIELDS 12

struct fl_field_def {
    const char *name;
    size_t len; /* strlen(name): a key is matched by its length first */
    enum fl_field_kind kind;
    int required;
    const char *const *enum_values; /* NULL-terminated, for FL_FK_ENUM */
    int64_t min, max;               /* for FL_FK_INT */
    size_t key_max;                 /* FL_FK_ID in a primary key: FL_ID_KEY_MAX, else 0 */
};

struct fl_event_def {
    const char *name;
    size_t name_len;
    int run_level; /* 1: addressed by run_id (its flow found through the run) */
    size_t nfields;
    struct fl_field_def fields[FL_MAX_FIELDS];
};

extern const struct fl_event_def fl_event_defs[FL_EV_COUNT];

/* The event type named name, or -1. */
int fl_event_type_from_name(const char *name, size_t len);
/* Index of field name in the type's definition, or -1. */
int fl_event_field_index(enum fl_event_type t, const char *name);
/* Index of value in a NULL-terminated enumeration, or -1. */
int fl_enum_index(const char *const *values, const char *s, size_t len);

/* ---- tables ---- */

enum fl_table {
    FL_T_FLOWS = 1,
    FL_T_RUNS,
    FL_T_ITERATIONS,
    FL_T_PATCHES,
    FL_T_SAST,
    FL_T_EXEC,
    FL_T_HUMAN,
    FL_T_LAST = FL_T_HUMAN
};

enum fl_col_type { FL_CT_STR, FL_CT_INT, FL_CT_TS };
enum { FL_IDX_NONE, FL_IDX_SECONDARY, FL_IDX_BY_FLOW };

struct fl_col_def {
    const char *name;
    enum fl_col_type type;
};

#define FL_MAX_COLS 16

struct fl_table_def {
    const char *name;
    size_t ncols;    /* stored columns */
    size_t nvisible; /* the first nvisible columns are the table's public columns */
    size_t npk;      /* the first npk columns form the primary key */
    struct fl_col_def cols[FL_MAX_COLS];
    /* FL_IDX_SECONDARY: the column has an entry in the idx database; FL_IDX_BY_FLOW: the column
     * names a flow or run, so its rows are found under that flow without an index. */
    int indexed[FL_MAX_COLS];
};

/* Indexed by enum fl_table (entry 0 unused). */
extern const struct fl_table_def fl_table_defs[FL_T_LAST + 1];

/* The table named name, or -1. */
int fl_table_from_name(const char *name, size_t len);
/* Column index in table t, or -1. */
int fl_table_col(enum fl_table t, const char *name, size_t len);

/* Column positions used by the projection code (they follow fl_table_defs). */
enum {
    FC_FLOW_ID, FC_FLOW_NAME, FC_FLOW_STATUS, FC_FLOW_CURRENT_RUN, FC_FLOW_LAST_UPDATE,
    FC_FLOW_SERVER, FC_FLOW_XML, FC_FLOW_DESC, FC_FLOW_PRIORITY, FC_FLOW_OWNER,
    FC_FLOW_CURRENT_ATTEMPT, FC_FLOW_TOTAL, FC_FLOW_SUCCESS, FC_FLOW_FIRST_AT, FC_FLOW_LAST_AT,
    FC_FLOW_NCOLS
};
enum {
    FC_RUN_ID, FC_RUN_FLOW, FC_RUN_JOB_RUN_ID, FC_RUN_START, FC_RUN_END, FC_RUN_STATUS,
    /* hidden columns: the attempt history of seed 001 */
    FC_RUN_JOB_ID, FC_RUN_ATTEMPT, FC_RUN_PROGRESS, FC_RUN_VALIDATION, FC_RUN_ERROR_MSG,
    FC_RUN_STATUS_MSG, FC_RUN_TRIGGERED_BY, FC_RUN_NCOLS
};
enum { FC_IT_RUN, FC_IT_NUM, FC_IT_STEP, FC_IT_STATUS, FC_IT_TS, FC_IT_SUMMARY, FC_IT_ERROR, FC_IT_NCOLS };
enum { FC_PA_RUN, FC_PA_NUM, FC_PA_ARTIFACT, FC_PA_SUMMARY, FC_PA_DIFF, FC_PA_TS, FC_PA_NCOLS };
enum { FC_SA_RUN, FC_SA_NUM, FC_SA_ARTIFACT, FC_SA_STATUS, FC_SA_FINDINGS, FC_SA_TS, FC_SA_NCOLS };
enum { FC_EX_RUN, FC_EX_NUM, FC_EX_JOB_TYPE, FC_EX_STATUS, FC_EX_RUNTIME, FC_EX_ERROR, FC_EX_LOGS, FC_EX_TS, FC_EX_NCOLS };
enum { FC_HU_RUN, FC_HU_NUM, FC_HU_REASON, FC_HU_STATUS, FC_HU_INSTRUCTIONS, FC_HU_TS, FC_HU_NCOLS };

#endif
