/* flowlog: the command-line client of flowlogd (CONTRACT.md section 6), one small function per
 * command over libflowlog. This file: the command table, option parsing, help, connecting. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_SERVER "127.0.0.1:7464"

/* ---- connecting ---- */

/* The first word of the first non-comment line of DIR/admin.token. */
static int read_token_file(struct ctx *x)
{
    char path[4096], line[1024];
    FILE *f;

    if ((size_t)snprintf(path, sizeof path, "%s/admin.token", x->data) >= sizeof path)
        return usage_err(x, "--data path too long");
    if (!(f = fopen(path, "r"))) {
        char msg[4200];
        snprintf(msg, sizeof msg, "cannot read the token file %s: %s", path, strerror(errno));
        return report(x, EX_CONNECT, "unauthenticated", msg, -1, -1);
    }
    while (fgets(line, sizeof line, f)) {
        char *w = line + strspn(line, " \t\r\n");
        size_t n = strcspn(w, " \t\r\n");
        if (n == 0 || w[0] == '#')
            continue;
        w[n] = '\0';
        x->token_buf = strdup(w);
        break;
    }
    fclose(f);
    if (!x->token_buf)
        return usage_err(x, "no token in %s", path);
    x->token = x->token_buf;
    return EX_OK;
}

/* Connect and say hello; returns an exit code (EX_OK when connected). */
int connect_ctx(struct ctx *x)
{
    int rc;

    if (!x->server)
        x->server = getenv("FLOWLOG_SERVER");
    if (!x->server || !*x->server)
        x->server = DEFAULT_SERVER;
    if (!x->token)
        x->token = getenv("FLOWLOG_TOKEN");
    if ((!x->token || !*x->token) && x->data) {
        x->token = NULL;
        if ((rc = read_token_file(x)) != EX_OK)
            return rc;
    }
    if (!x->token || !*x->token)
        return usage_err(x, "no token: use --token, FLOWLOG_TOKEN or --data DIR");
    if (!(x->c = flc_connect(x->server, x->token, x->tenant)))
        return report(x, EX_CONNECT, "nomem", "out of memory", -1, -1);
    /* Whatever refused the handshake (the token, the tenant it names, a full server), the
     * command could not connect and authenticate: exit 3, as the help says. */
    if (flc_errcode(x->c) != 0)
        return report(x, EX_CONNECT, flc_errname(x->c), flc_errmsg(x->c), -1, -1);
    return EX_OK;
}

/* ---- options ---- */

static const struct option global_opts[] = {
    {"server", required_argument, NULL, OPT_SERVER},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"tenant", required_argument, NULL, OPT_TENANT},
    {"data", required_argument, NULL, OPT_DATA},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
};
#define NGLOBAL (sizeof global_opts / sizeof global_opts[0])

/* Apply a global option; 1 if ch was one, 0 if not. */
static int global_opt(struct ctx *x, int ch, const char *arg)
{
    switch (ch) {
    case OPT_SERVER: x->server = arg; return 1;
    case OPT_TOKEN: x->token = arg; return 1;
    case OPT_TENANT: x->tenant = arg; return 1;
    case OPT_DATA: x->data = arg; return 1;
    case OPT_JSON: x->json = 1; return 1;
    default: return 0;
    }
}

/* A command's options followed by the global ones (globals may come after the command). */
static struct option *merge_opts(const struct option *own, size_t n, struct option *out)
{
    if (n)
        memcpy(out, own, n * sizeof *own);
    memcpy(out + n, global_opts, sizeof global_opts);
    memset(out + n + NGLOBAL, 0, sizeof *out);
    return out;
}

/* Parse a decimal unsigned integer, all of s. */
int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

/* Print one command's help. */
int cmd_help_text(const struct cmd *cm)
{
    printf("usage: flowlog [GLOBAL OPTIONS] %s\n\n%s\n", cm->usage, cm->help);
    printf("\nGlobal options (before or after the command): --server ADDR, --token T, "
           "--tenant T, --data DIR, --json.\n");
    return EX_OK;
}

/* The long name of option ch in opts (which ends with a zeroed entry). */
static const char *opt_name(const struct option *opts, int ch)
{
    for (; opts->name; opts++)
        if (opts->val == ch)
            return opts->name;
    return "?";
}

/* getopt over a command's options (own and global, anywhere on the line); calls own_opt for
 * the command's own. Returns EX_OK, a usage error, or -1 after printing help (exit 0). The
 * positional arguments end up in argv[1..*nargs], in order. */
int parse_cmd(struct ctx *x, const struct cmd *cm, int argc, char **argv,
                     const struct option *own, size_t nown,
                     int (*own_opt)(void *st, int ch, const char *arg), void *st, int *nargs)
{
    struct option all[32];
    int ch, npos = 1;

    merge_opts(own, nown, all);
    optind = 0; /* GNU getopt: re-initialise for a new argv; options may follow arguments */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, "-", all, NULL)) != -1) {
        if (ch == 1) {
            argv[npos++] = (char *)optarg; /* a positional argument, kept in order */
            continue;
        }
        if (ch == OPT_HELP) {
            cmd_help_text(cm);
            return -1;
        }
        if (ch == '?' || ch == ':')
            return usage_err(x, "%s: bad option '%s' (see flowlog %s --help)", cm->name,
                             argv[optind - 1], cm->name);
        if (global_opt(x, ch, optarg))
            continue;
        if (own_opt(st, ch, optarg) != 0)
            return usage_err(x, "%s: bad value '%s' for --%s (see flowlog %s --help)", cm->name,
                             optarg ? optarg : "", opt_name(all, ch), cm->name);
    }
    for (int i = optind; i < argc; i++) /* after "--" */
        argv[npos++] = argv[i];
    argv[npos] = NULL;
    *nargs = npos - 1;
    return EX_OK;
}

/* Options that commands without options of their own accept. */
int no_opt(void *st, int ch, const char *arg)
{
    return -1;
}

/* Parse a command that has no options and no arguments, then connect. */
int simple_cmd(struct ctx *x, const char *name, int argc, char **argv)
{
    int nargs, rc;

    if ((rc = parse_cmd(x, find_cmd(name), argc, argv, NULL, 0, no_opt, NULL, &nargs)) !=
        EX_OK)
        return rc;
    if (nargs != 0)
        return usage_err(x, "%s takes no arguments", name);
    return connect_ctx(x);
}

/* ---- help ---- */

static int cmd_help(struct ctx *x, int argc, char **argv);

static const struct cmd cmds[] = {
    {"append", cmd_append, "append [--batch]",
     "Append events read from stdin, one JSON object a line:\n"
     "  {\"type\": T, \"data\": {...}, \"event_id\": ID (optional), \"expected_version\": N "
     "(optional)}\n"
     "Prints one line per event: {\"seq\", \"ts\", \"duplicate\"} (duplicate: true when the "
     "event_id\nwas already appended; seq and ts are then the original's).\n"
     "Without --batch every line is its own append; up to 256 are in flight at once and the\n"
     "results are printed in input order. A failed line prints {\"error\": {...}} with \"index\""
     " =\nthe line's position (from 0, blank lines not counted); later lines are still sent.\n"
     "  --batch   send all lines as one atomic append (1..1000 events): all or nothing."},
    {"log", cmd_log, "log [--from SEQ] [--limit N] [--type T] [--flow F] [--run R] [--follow]",
     "Print events in seq order, one a line: {\"seq\", \"ts\", \"type\", \"event_id\", "
     "\"data\"}.\n"
     "  --from SEQ   start at this seq (default 1; 0 is the start too)\n"
     "  --limit N    stop after N events (0: no limit)\n"
     "  --type T, --flow F, --run R   only events of this type / flow / run\n"
     "  --follow     then keep printing new events as they are committed (a subscription);\n"
     "               ends after --limit events, or never"},
    {"timeline", cmd_timeline, "timeline (--run R | --flow F) [--from SEQ] [--limit N]",
     "Print all events of one run or one flow in seq order (format as log)."},
    {"state", cmd_state, "state FLOW_ID [--as-of-seq S | --as-of-time RFC3339]",
     "Print a flow's rows in the seven tables and its attempt history.\n"
     "  --as-of-seq S    as they were right after event S committed\n"
     "  --as-of-time T   as they were after the last event with ts <= T "
     "(e.g. 2026-11-21T22:39:03Z)"},
    {"history", cmd_history, "history FLOW_ID [--limit N]",
     "Print a flow's attempts, newest first: {\"flow_id\", \"history\": [...], \"count\"}.\n"
     "  --limit N   at most N attempts (default 20, as is 0)"},
    {"table", cmd_table, "table NAME [--where COLUMN=VALUE] [--limit N]",
     "Print a table's rows (one JSON object a line with --json), following pages.\n"
     "NAME: migration_flows, migration_runs, migration_iterations, migration_patches,\n"
     "migration_sast_results, migration_exec_results, migration_human_requests.\n"
     "  --where COLUMN=VALUE   only rows whose indexed COLUMN equals VALUE\n"
     "  --limit N              stop after N rows (0: no limit)"},
    {"rollback", cmd_rollback, "rollback FLOW_ID --to-seq S --reason TEXT [--event-id ID]",
     "Append a flow_rollback event (admin): the flow's rows become what they were right\n"
     "after event S. The log keeps everything. Prints the event's {\"seq\", \"ts\", "
     "\"duplicate\"}."},
    {"verify", cmd_verify, "verify",
     "Check checksums, the hash chain and that the projections equal a rebuild from the log\n"
     "(admin or operator). Exits 1 when problems are found."},
    {"stats", cmd_stats, "stats", "Print the server's counters (admin or operator)."},
    {"backup", cmd_backup, "backup [NAME]",
     "Write a consistent copy of the whole store to DATA/backups/NAME on the server's host\n"
     "(admin or operator; NAME: letters, digits, '.', '_', '-'; default backup-<time>).\n"
     "The copy is a data directory: flowlogd --data DATA/backups/NAME serves it."},
    {"rebuild", cmd_rebuild, "rebuild",
     "Make every projection again from the log (operator token only). Appends and reads wait\n"
     "while it runs (3.3-5 s per million events here). Prints {\"events\", \"head_seq\",\n"
     "\"micros\"}."},
    {"ping", cmd_ping, "ping",
     "Connect, authenticate and time one round trip; prints server, tenant and role."},
    {"help", cmd_help, "help [COMMAND]", "Print help for flowlog or for one command."},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

/* The command called name, or NULL. */
const struct cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* The overall help, with the exit codes. */
static void main_help(FILE *f)
{
    fprintf(f, "usage: flowlog [GLOBAL OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %s\n", cmds[i].usage);
    fprintf(f,
            "\nGlobal options (before or after the command):\n"
            "  --server ADDR   HOST:PORT or unix:PATH (env FLOWLOG_SERVER; default %s)\n"
            "  --token T       the access token (env FLOWLOG_TOKEN)\n"
            "  --tenant T      the tenant to act for (operator tokens only)\n"
            "  --data DIR      read the token from DIR/admin.token when none is given\n"
            "  --json          print JSON: one object, or one per line for streams; a failure\n"
            "                  prints {\"error\": {\"code\", \"message\", \"index\", \"version\"}}\n"
            "  --help          this text; `flowlog COMMAND --help` for one command\n"
            "\nExit codes:\n"
            "  0  success\n"
            "  1  the server refused a request (bad_request, forbidden, not_found, conflict, ...),\n"
            "     or verify found problems\n"
            "  2  usage error: bad options or arguments, or unreadable input on stdin\n"
            "  3  cannot connect or authenticate, or the connection broke (codes connection,\n"
            "     protocol, timeout, unauthenticated)\n",
            DEFAULT_SERVER);
}

/* flowlog help [COMMAND] */
static int cmd_help(struct ctx *x, int argc, char **argv)
{
    const struct cmd *cm;

    if (argc < 2) {
        main_help(stdout);
        return EX_OK;
    }
    if (!(cm = find_cmd(argv[1])))
        return usage_err(x, "unknown command '%s'", argv[1]);
    return cmd_help_text(cm);
}

/* Parse the global options before the command; returns the command's index in argv. */
static int parse_globals(struct ctx *x, int argc, char **argv, int *help)
{
    struct option all[NGLOBAL + 1];
    int ch;

    merge_opts(NULL, 0, all);
    opterr = 0;
    optind = 0;
    while ((ch = getopt_long(argc, argv, "+", all, NULL)) != -1) {
        if (ch == OPT_HELP)
            *help = 1;
        else if (!global_opt(x, ch, optarg))
            return -1;
    }
    return optind;
}

/* Global options, then the command, whose own parser also takes the global ones. */
int main(int argc, char **argv)
{
    struct ctx x = {0};
    const struct cmd *cm;
    int help = 0, i, rc;

    if ((i = parse_globals(&x, argc, argv, &help)) < 0) {
        rc = usage_err(&x, "bad option '%s' (see flowlog --help)", argv[optind - 1]);
        return rc;
    }
    if (i >= argc) {
        main_help(help ? stdout : stderr);
        return help ? EX_OK : EX_USAGE;
    }
    if (!(cm = find_cmd(argv[i])))
        return usage_err(&x, "unknown command '%s' (see flowlog --help)", argv[i]);
    if (help)
        return cmd_help_text(cm);
    rc = cm->run(&x, argc - i, argv + i);
    flc_free(x.c);
    free(x.token_buf);
    return rc;
}
