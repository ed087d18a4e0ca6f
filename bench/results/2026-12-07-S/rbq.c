/* repeated rebuilds of one store: rbq DIR N */
#include "store.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv)
{
    struct fl_store *s; struct fl_error err = {0};
    struct fl_store_opts o = {.dir = argv[1]};
    int n = argc > 2 ? atoi(argv[2]) : 5;
    if (fl_store_open(&s, &o, &err) != 0) { fprintf(stderr, "open: %s\n", err.msg); return 1; }
    for (int i = 0; i < n; i++) {
        uint64_t ev = 0; double t0 = now();
        if (fl_store_rebuild(s, &ev, &err) != 0) { fprintf(stderr, "rebuild: %s\n", err.msg); return 1; }
        double t = now() - t0;
        printf("rebuild %d: %llu events %.3f s %.0f ev/s\n", i, (unsigned long long)ev, t, ev / t);
    }
    fl_store_close(s);
    return 0;
}
