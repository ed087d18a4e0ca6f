/* cli.h: what the flowlog CLI's files share: the context, exit codes, option codes, output
 * and error helpers. flowlog.c parses the command line and dispatches; cmd_*.c hold the
 * commands; cli_out.c prints JSON, tables and errors. */
#ifndef FL_TOOLS_CLI_H
#define FL_TOOLS_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>

#include "flowlog.h"
#include "json.h"

/* Exit codes (also in `flowlog --help`). */
enum {
    EX_OK = 0,      /* done */
    EX_SERVER = 1,  /* the server refused a request (or verify found problems) */
    EX_USAGE = 2,   /* bad command line or bad input; nothing, or not everything, was sent */
    EX_CONNECT = 3, /* could not connect, authenticate, or the connection broke */
};

/* getopt_long codes of every option (global ones first). */
enum {
    OPT_SERVER = 256, OPT_TOKEN, OPT_TENANT, OPT_DATA, OPT_JSON, OPT_HELP,
    OPT_BATCH, OPT_FROM, OPT_LIMIT, OPT_TYPE, OPT_FLOW, OPT_RUN, OPT_FOLLOW,
    OPT_ASOF_SEQ, OPT_ASOF_TIME, OPT_WHERE, OPT_TO_SEQ, OPT_REASON, OPT_EVENT_ID,
};

struct ctx {
    const char *server, *token, *tenant, *data;
    int json;
    char *token_buf; /* a token read from DIR/admin.token */
    flc_client *c;
};

struct cmd {
    const char *name;
    int (*run)(struct ctx *x, int argc, char **argv);
    const char *usage;
    const char *help;
};

/* ---- flowlog.c: commands, options, connecting ---- */

/* The command called name, or NULL. */
const struct cmd *find_cmd(const char *name);
/* Print one command's help; returns EX_OK. */
int cmd_help_text(const struct cmd *cm);
/* getopt over a command's own options and the global ones, anywhere on the line; calls own_opt
 * for the command's own. Returns EX_OK, a usage error, or -1 after printing help (exit 0). The
 * positional arguments end up in argv[1..*nargs], in order. */
int parse_cmd(struct ctx *x, const struct cmd *cm, int argc, char **argv,
              const struct option *own, size_t nown,
              int (*own_opt)(void *st, int ch, const char *arg), void *st, int *nargs);
/* An own_opt for commands without options of their own. */
int no_opt(void *st, int ch, const char *arg);
/* Parse a command that has no options and no arguments, then connect. */
int simple_cmd(struct ctx *x, const char *name, int argc, char **argv);
/* Parse a decimal unsigned integer, all of s: 0 or -1. */
int parse_u64(const char *s, uint64_t *out);
/* Connect and say hello; returns an exit code (EX_OK when connected). */
int connect_ctx(struct ctx *x);

/* ---- cli_out.c: output and errors ---- */

/* Print one compact JSON line to stdout and flush it (streams are read as they come). */
void put_json(json_t *j);
/* The error object of CONTRACT.md section 6 (plus "version" with conflicts). */
json_t *error_json(const char *code, const char *msg, int64_t index, int64_t version);
/* Report a failure (JSON on stdout with --json, else a line on stderr); returns exit_code. */
int report(struct ctx *x, int exit_code, const char *code, const char *msg, int64_t index,
           int64_t version);
/* A usage or input error found here; returns EX_USAGE. */
int usage_err(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The exit code for a library error code. */
int exit_for(int code);
/* Report the handle's error; returns the matching exit code. */
int client_err(struct ctx *x);
/* Convert a result to JSON, reporting a failure as a protocol error (then NULL). */
json_t *to_json(struct ctx *x, const msgpack_object *o, enum fjson_time tf);
/* Print a JSON result: one line with --json, else with put_human. */
int put_result(struct ctx *x, const msgpack_object *res, void (*put_human)(json_t *));
/* A JSON value as text for people: a string bare (a NUL byte as \u0000, other control
 * characters as spaces), null as "-", anything else as compact JSON. Caller frees; NULL when
 * out of memory. */
char *cli_text(const json_t *v);
/* Print rows (JSON objects) as an aligned table of the given columns (NULL: the first row's). */
void put_table(json_t *rows, const char *const *cols, size_t ncols, const char *indent);
/* Print an object as "key: value" lines, keys aligned. */
void put_fields(json_t *obj, const char *indent);

/* ---- the commands ---- */

int cmd_append(struct ctx *x, int argc, char **argv);
/* Print every acknowledgement of an append result (also used by rollback). */
int put_acks(struct ctx *x, const msgpack_object *res);
int cmd_log(struct ctx *x, int argc, char **argv);
int cmd_timeline(struct ctx *x, int argc, char **argv);
int cmd_state(struct ctx *x, int argc, char **argv);
int cmd_history(struct ctx *x, int argc, char **argv);
int cmd_table(struct ctx *x, int argc, char **argv);
int cmd_rollback(struct ctx *x, int argc, char **argv);
int cmd_verify(struct ctx *x, int argc, char **argv);
int cmd_stats(struct ctx *x, int argc, char **argv);
int cmd_backup(struct ctx *x, int argc, char **argv);
int cmd_rebuild(struct ctx *x, int argc, char **argv);
int cmd_ping(struct ctx *x, int argc, char **argv);

#endif
