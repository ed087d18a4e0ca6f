/* config.c: the command line as one declarative table. Each option names its field in struct
 * config, how to parse it and its bounds; --help is generated from the same table, so the
 * usage text cannot drift from what is accepted. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "wire.h"

enum opt_kind { OPT_STR, OPT_UINT, OPT_SYNC, OPT_LEVEL, OPT_LISTEN, OPT_HELP };

struct opt_def {
    const char *name;
    const char *arg; /* metavariable for --help; NULL: no argument */
    enum opt_kind kind;
    size_t off;        /* offset of the field in struct config */
    uint64_t min, max; /* for OPT_UINT */
    const char *help;
};

#define F(field) offsetof(struct config, field)

static const struct opt_def opt_table[] = {
    {"data", "DIR", OPT_STR, F(data_dir), 0, 0,
     "data directory, created if missing (default " CONFIG_DEFAULT_DATA ")"},
    {"listen", "HOST:PORT", OPT_LISTEN, F(listen), 0, 0,
     "TCP address (default " CONFIG_DEFAULT_LISTEN
     "; port 0 picks a free port; 'none' disables TCP)"},
    {"unix", "PATH", OPT_STR, F(unix_path), 0, 0, "also listen on a Unix socket at PATH"},
    {"tokens", "FILE", OPT_STR, F(tokens_file), 0, 0,
     "tokens file: 'TOKEN TENANT ROLE' per line, mode 0600 (default: DIR/admin.token)"},
    {"sync", "full|none", OPT_SYNC, F(sync), 0, 0,
     "full: acknowledge appends only after fsync (default); none: for tests only, loses data"},
    {"max-connections", "N", OPT_UINT, F(max_connections), 1, 1000000,
     "most simultaneous client connections (default 1024)"},
    {"max-frame", "BYTES", OPT_UINT, F(max_frame), 4096, 1u << 30,
     "largest request or reply frame (default 4194304)"},
    {"max-batch", "N", OPT_UINT, F(max_batch), 1, 100000,
     "most events in one append (default 1000)"},
    {"max-event", "BYTES", OPT_UINT, F(max_event), 1024, 1u << 30,
     "largest event: its data as stored, in msgpack (default 1048576; at most --max-frame less "
     "1024)"},
    {"max-output", "BYTES", OPT_UINT, F(max_output), 65536, 1u << 30,
     "replies queued for one client before reading it pauses (default 2097152)"},
    {"hello-timeout", "SECONDS", OPT_UINT, F(hello_timeout), 1, 3600,
     "close a connection that has not said hello this long after connecting (default 10)"},
    {"idle-timeout", "SECONDS", OPT_UINT, F(idle_timeout), 0, 604800,
     "close a connection with no request, reply or subscription this long (default 300; "
     "0: never)"},
    {"log-level", "LEVEL", OPT_LEVEL, F(log_level), 0, 0,
     "debug, info, warn or error (default info)"},
    {"port-file", "FILE", OPT_STR, F(port_file), 0, 0,
     "write the bound TCP port to FILE once listening (for tests using port 0)"},
    {"help", NULL, OPT_HELP, 0, 0, 0, "print this help and exit"},
};

#define OPT_COUNT (sizeof opt_table / sizeof opt_table[0])

/* Defaults live here, next to the table, so a reader sees both at once. */
static void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    c->data_dir = CONFIG_DEFAULT_DATA;
    c->listen = CONFIG_DEFAULT_LISTEN;
    c->sync = 1;
    c->max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
    c->max_frame = FL_DEFAULT_MAX_FRAME;
    c->max_batch = FL_DEFAULT_MAX_BATCH;
    c->max_event = FL_DEFAULT_MAX_EVENT;
    c->max_output = CONFIG_DEFAULT_MAX_OUTPUT;
    c->hello_timeout = CONFIG_DEFAULT_HELLO_TIMEOUT;
    c->idle_timeout = CONFIG_DEFAULT_IDLE_TIMEOUT;
    c->log_level = FL_DIAG_INFO;
}

/* The usage text, generated from the table. */
static void config_usage(FILE *f)
{
    fprintf(f, "usage: flowlogd [OPTION]...\nServe the flowlog event log.\n\n");
    for (size_t i = 0; i < OPT_COUNT; i++) {
        const struct opt_def *o = &opt_table[i];
        char left[64];

        snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-28s %s\n", left, o->help);
    }
}

/* Parse a decimal unsigned integer within [min, max]; 0 or -1. */
static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int config_split_listen(const char *spec, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon, *hs = spec;
    size_t hl;
    uint64_t p;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        if (!close || close[1] != ':')
            return -1;
        hs = spec + 1;
        hl = (size_t)(close - hs);
        colon = close + 1;
    } else {
        colon = strrchr(spec, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - spec);
        if (memchr(spec, ':', hl)) /* a bare IPv6 address needs brackets */
            return -1;
    }
    if (hl + 1 > hostlen || parse_uint(colon + 1, 0, 65535, &p) != 0)
        return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* Apply one option's argument to its field; 0, or -1 after printing why. */
static int config_apply(struct config *c, const struct opt_def *o, const char *arg)
{
    void *field = (char *)c + o->off;
    char host[256];
    uint16_t port;

    switch (o->kind) {
    case OPT_STR:
        if (*arg == '\0')
            goto bad;
        *(const char **)field = arg;
        return 0;
    case OPT_UINT:
        if (parse_uint(arg, o->min, o->max, (uint64_t *)field) != 0) {
            fprintf(stderr,
                    "flowlogd: --%s: '%s' is not a whole number in %" PRIu64 "..%" PRIu64 "\n",
                    o->name, arg, o->min, o->max);
            return -1;
        }
        return 0;
    case OPT_SYNC:
        if (strcmp(arg, "full") != 0 && strcmp(arg, "none") != 0)
            goto bad;
        *(int *)field = strcmp(arg, "full") == 0;
        return 0;
    case OPT_LEVEL: {
        static const char *const names[] = {"debug", "info", "warn", "error"};
        for (int i = 0; i < 4; i++)
            if (strcmp(arg, names[i]) == 0) {
                *(enum fl_diag_level *)field = (enum fl_diag_level)i;
                return 0;
            }
        goto bad;
    }
    case OPT_LISTEN:
        if (strcmp(arg, "none") == 0) {
            *(const char **)field = NULL;
            return 0;
        }
        if (config_split_listen(arg, host, sizeof host, &port) != 0)
            goto bad;
        *(const char **)field = arg;
        return 0;
    case OPT_HELP:
        return 0;
    }
bad:
    fprintf(stderr, "flowlogd: --%s: '%s' is not valid; expected %s\n", o->name, arg,
            o->arg ? o->arg : "no argument");
    return -1;
}

enum config_result config_parse(struct config *c, int argc, char **argv)
{
    struct option longopts[OPT_COUNT + 1];
    int idx, ch;

    config_defaults(c);
    memset(longopts, 0, sizeof longopts);
    for (size_t i = 0; i < OPT_COUNT; i++) {
        longopts[i].name = opt_table[i].name;
        longopts[i].has_arg = opt_table[i].arg ? required_argument : no_argument;
        longopts[i].val = 0;
    }
    optind = 1;
    for (;;) {
        idx = -1;
        ch = getopt_long(argc, argv, "h", longopts, &idx);
        if (ch == -1)
            break;
        if (ch == 'h' || (ch == 0 && opt_table[idx].kind == OPT_HELP)) {
            config_usage(stdout);
            return CONFIG_EXIT_OK;
        }
        if (ch != 0 || idx < 0) {
            fprintf(stderr, "Try 'flowlogd --help'.\n");
            return CONFIG_EXIT_USAGE;
        }
        if (config_apply(c, &opt_table[idx], optarg) != 0)
            return CONFIG_EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "flowlogd: unexpected argument '%s'\nTry 'flowlogd --help'.\n",
                argv[optind]);
        return CONFIG_EXIT_USAGE;
    }
    if (!c->listen && !c->unix_path) {
        fprintf(stderr, "flowlogd: --listen none needs --unix PATH, or clients cannot connect\n");
        return CONFIG_EXIT_USAGE;
    }
    /* Every event taken must be readable again: a log reply wraps one event in under 1 KiB. */
    if (c->max_event > c->max_frame - CONFIG_FRAME_OVERHEAD)
        c->max_event = c->max_frame - CONFIG_FRAME_OVERHEAD;
    return CONFIG_RUN;
}
