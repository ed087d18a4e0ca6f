/* workload-dump: print the migration-day workload as JSON lines in the CLI's format (to feed
 * `flowlog append`), print its statistics, or check the generator's invariants.
 *
 *   bench/workload-dump [--writers=C] [--writer=W] [workload options]   JSON lines
 *   bench/workload-dump --stats [...]                                   counts and sizes
 *   bench/workload-dump --check [...]                                   self-check; exit 0/1 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

static const char usage[] =
    "usage: workload-dump [--stats | --check] [--writers=C] [--writer=W] [workload options]\n";

/* FNV-1a over bytes, to compare two generations cheaply. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Generate the whole workload with nwriters writers; count events per type, hash the bytes,
 * and (if ids != NULL) collect "tenant/event_id" strings. */
static uint64_t generate(const struct wl_params *p, int nwriters, uint64_t counts[WL_NTYPES],
                         uint64_t *bytes, uint64_t *units, size_t *maxunit, char **ids,
                         int *order_ok)
{
    struct wl_batch *b = malloc(sizeof *b);
    uint64_t h = 0xcbf29ce484222325ull, n = 0;
    int *last_flow = calloc((size_t)p->tenants * p->flows, sizeof *last_flow);
    if (!b || !last_flow)
        exit(2);
    wl_batch_init(b);
    for (int w = 0; w < nwriters; w++) {
        struct wl_writer it;
        int prev_flow = -1;
        wl_writer_init(&it, p, nwriters, w);
        while (wl_writer_next(&it, b)) {
            (*units)++;
            if (b->n > *maxunit)
                *maxunit = b->n;
            h = fnv(h, b->sb.data, b->sb.size);
            *bytes += b->sb.size;
            for (size_t i = 0; i < b->n; i++) {
                const struct wl_event *e = &b->ev[i];
                counts[e->type]++;
                /* each flow belongs to exactly this writer, and flows come in order */
                if (wl_owner(p, nwriters, e->flow) != w || e->flow < prev_flow)
                    *order_ok = 0;
                prev_flow = e->flow;
                last_flow[e->flow]++;
                if (ids) {
                    char *s;
                    if (asprintf(&s, "%d/%s", e->tenant, e->event_id) < 0)
                        exit(2);
                    ids[n] = s;
                }
                n++;
            }
        }
    }
    for (int g = 0; g < p->tenants * p->flows; g++) {
        int want = 1;
        for (int r = 0; r < p->runs; r++)
            want += wl_run_events(p, g, r);
        if (last_flow[g] != want)
            *order_ok = 0;
    }
    free(last_flow);
    wl_batch_free(b);
    free(b);
    return h;
}

static int check(const struct wl_params *p)
{
    const int writers[] = {1, 3, 16, 64};
    uint64_t total = wl_total_events(p), h0 = 0;
    int fails = 0;
    for (size_t k = 0; k < sizeof writers / sizeof *writers; k++) {
        uint64_t counts[WL_NTYPES] = {0}, bytes = 0, units = 0, n = 0;
        size_t maxunit = 0;
        int order_ok = 1;
        char **ids = k == 0 ? calloc(total, sizeof *ids) : NULL;
        uint64_t h = generate(p, writers[k], counts, &bytes, &units, &maxunit, ids, &order_ok);
        for (int t = 0; t < WL_NTYPES; t++)
            n += counts[t];
        if (n != total) {
            printf("not ok: %d writers: %" PRIu64 " events, expected %" PRIu64 "\n", writers[k], n,
                   total);
            fails++;
        }
        if (units != wl_total_units(p)) {
            printf("not ok: %d writers: %" PRIu64 " units, expected %" PRIu64 "\n", writers[k],
                   units, wl_total_units(p));
            fails++;
        }
        if (!order_ok) {
            printf("not ok: %d writers: flows not disjoint, out of order or incomplete\n",
                   writers[k]);
            fails++;
        }
        if (k == 0) {
            h0 = h;
            qsort(ids, total, sizeof *ids, cmp_str);
            for (uint64_t i = 1; i < total; i++)
                if (strcmp(ids[i - 1], ids[i]) == 0) {
                    printf("not ok: duplicate event_id %s\n", ids[i]);
                    fails++;
                    break;
                }
            for (uint64_t i = 0; i < total; i++)
                free(ids[i]);
            free(ids);
            uint64_t runs = (uint64_t)p->tenants * p->flows * p->runs;
            if (counts[WL_HUMAN_REQUEST] != runs / 10) {
                printf("not ok: %" PRIu64 " human requests, expected %" PRIu64 "\n",
                       counts[WL_HUMAN_REQUEST], runs / 10);
                fails++;
            }
        } else if (writers[k] == 1) {
            (void)h0;
        }
        /* determinism: generating again gives the same bytes */
        uint64_t c2[WL_NTYPES] = {0}, b2 = 0, u2 = 0;
        size_t m2 = 0;
        int o2 = 1;
        if (generate(p, writers[k], c2, &b2, &u2, &m2, NULL, &o2) != h) {
            printf("not ok: %d writers: generation is not deterministic\n", writers[k]);
            fails++;
        }
    }
    printf("%s: %" PRIu64 " events, %" PRIu64 " units\n", fails ? "FAIL" : "ok", total,
           wl_total_units(p));
    return fails ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct wl_params p;
    int nwriters = 1, only = -1, stats = 0, do_check = 0;
    wl_params_default(&p);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        char name[64];
        if (strncmp(a, "--", 2) != 0)
            goto bad;
        size_t nl = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nl >= sizeof name)
            goto bad;
        memcpy(name, a + 2, nl);
        name[nl] = '\0';
        const char *val = eq ? eq + 1 : "";
        if (strcmp(name, "stats") == 0)
            stats = 1;
        else if (strcmp(name, "check") == 0)
            do_check = 1;
        else if (strcmp(name, "writers") == 0)
            nwriters = atoi(val);
        else if (strcmp(name, "writer") == 0)
            only = atoi(val);
        else if (strcmp(name, "help") == 0) {
            printf("%s%s", usage, wl_params_usage());
            return 0;
        } else if (wl_params_opt(&p, name, val) != 1)
            goto bad;
    }
    char msg[128];
    if (nwriters < 1 || only >= nwriters || wl_params_check(&p, msg, sizeof msg) != 0) {
        fprintf(stderr, "bad parameters\n");
        return 2;
    }
    if (do_check)
        return check(&p);
    if (stats) {
        uint64_t counts[WL_NTYPES] = {0}, bytes = 0, units = 0;
        size_t maxunit = 0;
        int ok = 1;
        char desc[160];
        generate(&p, nwriters, counts, &bytes, &units, &maxunit, NULL, &ok);
        wl_params_describe(&p, desc, sizeof desc);
        printf("workload: %s\nunits: %" PRIu64 " (largest %zu events)\npacked bytes: %" PRIu64
               " (%.0f per event)\n",
               desc, units, maxunit, bytes, (double)bytes / (double)wl_total_events(&p));
        for (int t = 0; t < WL_NTYPES; t++)
            printf("  %-16s %" PRIu64 "\n", wl_type_name((enum wl_type)t), counts[t]);
        return 0;
    }
    struct wl_batch *b = malloc(sizeof *b);
    size_t cap = (size_t)p.findings * 2 + 65536;
    char *line = malloc(cap);
    if (!b || !line)
        return 2;
    wl_batch_init(b);
    for (int w = 0; w < nwriters; w++) {
        struct wl_writer it;
        if (only >= 0 && w != only)
            continue;
        wl_writer_init(&it, &p, nwriters, w);
        while (wl_writer_next(&it, b))
            for (size_t i = 0; i < b->n; i++) {
                size_t n = wl_event_json(&b->ev[i], line, cap);
                if (n >= cap)
                    return 2;
                fwrite(line, 1, n, stdout);
                fputc('\n', stdout);
            }
    }
    wl_batch_free(b);
    free(b);
    free(line);
    return 0;
bad:
    fprintf(stderr, "%s%s", usage, wl_params_usage());
    return 2;
}
