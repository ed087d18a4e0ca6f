/* err.c: names and records for the contract's error codes. */
#include "err.h"

#include <stdio.h>
#include <string.h>

static const char *const err_names[FL_ERR_COUNT] = {
    "ok",
    "bad_request",
    "unauthenticated",
    "forbidden",
    "not_found",
    "already_exists",
    "invalid_transition",
    "conflict",
    "idempotency_mismatch",
    "too_large",
    "unavailable",
    "internal",
};

const char *fl_err_name(int code)
{
    if (code > 0 || code <= -FL_ERR_COUNT)
        return "internal";
    return err_names[-code];
}

int fl_err_from_name(const char *name, size_t len)
{
    for (int i = 1; i < FL_ERR_COUNT; i++)
        if (strlen(err_names[i]) == len && memcmp(err_names[i], name, len) == 0)
            return -i;
    return FL_EINTERNAL;
}

void fl_error_clear(struct fl_error *e)
{
    if (!e)
        return;
    e->code = 0;
    e->index = -1;
    e->version = -1;
    e->msg[0] = '\0';
}

int fl_error_vset(struct fl_error *e, int code, const char *fmt, va_list ap)
{
    if (!e)
        return code;
    /* Through a copy: callers wrap an earlier message ("seq 7: %s", e->msg), and vsnprintf
     * into the buffer it reads from is undefined. */
    char buf[FL_ERR_MSG_MAX];
    vsnprintf(buf, sizeof buf, fmt, ap);
    e->code = code;
    memcpy(e->msg, buf, sizeof buf);
    return code;
}

int fl_error_set(struct fl_error *e, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fl_error_vset(e, code, fmt, ap);
    va_end(ap);
    return code;
}
