/* diag.c: leveled diagnostics with a UTC timestamp, one line each. */
#include "diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

/* The one process-wide setting outside the server context: diagnostics may be emitted from
 * start-up code before any context exists. Written once before the loop starts. */
static enum fl_diag_level diag_min = FL_DIAG_INFO;

void fl_diag_set_level(enum fl_diag_level level)
{
    diag_min = level;
}

static void diag_vprint(const char *tag, const char *fmt, va_list ap)
{
    struct timeval tv;
    struct tm tm;
    char when[32];

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ flowlogd %s: ", when, (long)(tv.tv_usec / 1000), tag);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void fl_diag(enum fl_diag_level level, const char *fmt, ...)
{
    static const char *const tags[] = {"debug", "info", "warn", "error"};
    va_list ap;

    if (level < diag_min)
        return;
    va_start(ap, fmt);
    diag_vprint(tags[level], fmt, ap);
    va_end(ap);
}

void fl_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    diag_vprint("fatal", fmt, ap);
    va_end(ap);
    exit(1);
}
