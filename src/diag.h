/* diag.h: leveled diagnostics on stderr ("log" is the product's word, so this is "diag").
 * Never pass a token or other secret to these functions. */
#ifndef FL_DIAG_H
#define FL_DIAG_H

enum fl_diag_level { FL_DIAG_DEBUG, FL_DIAG_INFO, FL_DIAG_WARN, FL_DIAG_ERROR };

/* Set the lowest level printed (default INFO). Called once at start-up, before any thread. */
void fl_diag_set_level(enum fl_diag_level level);
void fl_diag(enum fl_diag_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* For start-up failures and broken invariants only: print and exit(1). */
void fl_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define fl_debug(...) fl_diag(FL_DIAG_DEBUG, __VA_ARGS__)
#define fl_info(...) fl_diag(FL_DIAG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_diag(FL_DIAG_WARN, __VA_ARGS__)
#define fl_errorf(...) fl_diag(FL_DIAG_ERROR, __VA_ARGS__)

#endif
