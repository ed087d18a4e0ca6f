/* cli_out.c: how the flowlog CLI prints: JSON lines, aligned tables for people, errors. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define CELL_MAX 48 /* widest table cell for people; longer ones end in "..." */

/* ---- errors and output ---- */

/* Print one compact JSON line to stdout and flush it (streams are read as they come). */
void put_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    } else {
        fputs("{\"error\":{\"code\":\"nomem\",\"message\":\"out of memory\",\"index\":null}}\n",
              stdout);
    }
    fflush(stdout);
}

/* The error object of CONTRACT.md section 6 (plus "version" with conflicts). */
json_t *error_json(const char *code, const char *msg, int64_t index, int64_t version)
{
    json_t *e = json_pack("{s:s,s:s,s:o,s:o}", "code", code, "message", msg, "index",
                          index >= 0 ? json_integer(index) : json_null(), "version",
                          version >= 0 ? json_integer(version) : json_null());
    return json_pack("{s:o}", "error", e);
}

/* Report a failure (JSON on stdout with --json, else a line on stderr); returns exit. */
int report(struct ctx *x, int exit_code, const char *code, const char *msg, int64_t index,
                  int64_t version)
{
    if (x->json) {
        json_t *j = error_json(code, msg, index, version);
        put_json(j);
        json_decref(j);
    } else {
        fprintf(stderr, "flowlog: %s: %s", code, msg);
        if (index >= 0)
            fprintf(stderr, " (event %" PRId64 ")", index);
        if (version >= 0)
            fprintf(stderr, " (the flow is at version %" PRId64 ")", version);
        fputc('\n', stderr);
    }
    return exit_code;
}

/* A usage or input error found here; returns EX_USAGE. */
__attribute__((format(printf, 2, 3))) int usage_err(struct ctx *x, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return report(x, EX_USAGE, "usage", msg, -1, -1);
}

/* The exit code for a library error code. */
int exit_for(int code)
{
    switch (code) {
    case FLC_ECONNECTION:
    case FLC_EPROTOCOL:
    case FLC_ETIMEOUT:
    case FLC_EUNAUTHENTICATED:
        return EX_CONNECT;
    case FLC_EUSAGE:
        return EX_USAGE;
    default:
        return EX_SERVER;
    }
}

/* Report the handle's error; returns the matching exit code. */
int client_err(struct ctx *x)
{
    return report(x, exit_for(flc_errcode(x->c)), flc_errname(x->c), flc_errmsg(x->c),
                  flc_errindex(x->c), flc_errversion(x->c));
}

/* Convert a result to JSON, reporting a failure as a protocol error. */
json_t *to_json(struct ctx *x, const msgpack_object *o, enum fjson_time tf)
{
    char err[FJSON_ERR_MAX];
    json_t *j = fjson_from_msgpack(o, tf, err);

    if (!j)
        report(x, EX_CONNECT, "protocol", err, -1, -1);
    return j;
}

/* Print a JSON result: as one line with --json, else with put_human. */
int put_result(struct ctx *x, const msgpack_object *res, void (*put_human)(json_t *))
{
    json_t *j = to_json(x, res, x->json ? FJSON_TIME_RFC3339 : FJSON_TIME_HUMAN);

    if (!j)
        return EX_CONNECT;
    if (x->json)
        put_json(j);
    else
        put_human(j);
    json_decref(j);
    return EX_OK;
}

/* ---- tables for people ---- */

/* A JSON value as text for people (cli.h). A string is copied byte by byte, not as a C string:
 * an id may hold a NUL, which would otherwise end it early and show another id. */
char *cli_text(const json_t *v)
{
    if (!v || json_is_null(v))
        return strdup("-");
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v), nuls = 0;
        for (size_t i = 0; i < n; i++)
            nuls += s[i] == '\0';
        char *t = malloc(n + 5 * nuls + 1), *p = t;
        if (!t)
            return NULL;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == 0) {
                memcpy(p, "\\u0000", 6); /* as the JSON output writes it */
                p += 6;
            } else {
                *p++ = c < 0x20 ? ' ' : (char)c; /* a newline would break the table's rows */
            }
        }
        *p = '\0';
        return t;
    }
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Display width of a UTF-8 string (code points; good enough for a terminal table). */
static size_t text_width(const char *s)
{
    size_t w = 0;

    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

/* Print s padded to width; cells wider than CELL_MAX are cut with a visible "...". */
static void put_cell(const char *s, size_t width, int last)
{
    size_t w = text_width(s);

    if (w > CELL_MAX) {
        const char *p = s;
        for (size_t k = 0; *p && k < CELL_MAX - 3; k++)
            for (p++; ((unsigned char)*p & 0xC0) == 0x80; p++)
                ;
        fwrite(s, 1, (size_t)(p - s), stdout);
        fputs("...", stdout);
        w = CELL_MAX;
    } else {
        fputs(s, stdout);
    }
    if (!last)
        for (size_t i = w; i < width + 2; i++)
            fputc(' ', stdout);
}

/* Width of a column for people: its header and its cells, at most CELL_MAX. */
static size_t col_width(const char *name, json_t *rows, const char *key)
{
    size_t w = strlen(name), i;
    json_t *row;

    json_array_foreach(rows, i, row) {
        char *t = cli_text(json_object_get(row, key));
        size_t tw = t ? text_width(t) : 0;
        if (tw > w)
            w = tw;
        free(t);
    }
    return w > CELL_MAX ? CELL_MAX : w;
}

/* Print rows (JSON objects) as an aligned table of the given columns (NULL: the first row's). */
void put_table(json_t *rows, const char *const *cols, size_t ncols, const char *indent)
{
    const char *keys[64];
    size_t widths[64], n = 0, i;
    json_t *row;

    if (json_array_size(rows) == 0) {
        printf("%s(no rows)\n", indent);
        return;
    }
    if (cols) {
        for (; n < ncols && n < 64; n++)
            keys[n] = cols[n];
    } else {
        const char *k;
        json_t *v;
        json_object_foreach(json_array_get(rows, 0), k, v) {
            if (n < 64)
                keys[n++] = k;
        }
    }
    fputs(indent, stdout);
    for (i = 0; i < n; i++) {
        widths[i] = col_width(keys[i], rows, keys[i]);
        put_cell(keys[i], widths[i], i + 1 == n);
    }
    fputc('\n', stdout);
    json_array_foreach(rows, i, row) {
        fputs(indent, stdout);
        for (size_t c = 0; c < n; c++) {
            char *t = cli_text(json_object_get(row, keys[c]));
            put_cell(t ? t : "?", widths[c], c + 1 == n);
            free(t);
        }
        fputc('\n', stdout);
    }
}

/* Print an object as "key: value" lines, keys aligned. */
void put_fields(json_t *obj, const char *indent)
{
    const char *k;
    json_t *v;
    size_t w = 0;

    json_object_foreach(obj, k, v) {
        if (strlen(k) > w)
            w = strlen(k);
    }
    json_object_foreach(obj, k, v) {
        if (json_is_object(v)) { /* a nested map (stats' store): its fields, indented */
            char more[64];
            printf("%s%s\n", indent, k);
            snprintf(more, sizeof more, "%s  ", indent);
            put_fields(v, more);
            continue;
        }
        if (json_is_real(v)) { /* averages: three decimals are what a person reads */
            printf("%s%-*s  %.3f\n", indent, (int)w, k, json_real_value(v));
            continue;
        }
        char *t = cli_text(v);
        printf("%s%-*s  %s\n", indent, (int)w, k, t ? t : "?");
        free(t);
    }
}
