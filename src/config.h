/* config.h: flowlogd's settings, filled from the command line by one declarative option table.
 * The struct is written once at start-up and read through the server context afterwards. */
#ifndef FL_CONFIG_H
#define FL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "diag.h"

#define CONFIG_DEFAULT_DATA "./flowlog-data"
#define CONFIG_DEFAULT_LISTEN "127.0.0.1:7464"
#define CONFIG_DEFAULT_MAX_CONNECTIONS 1024
#define CONFIG_FRAME_OVERHEAD 1024 /* room around one event in a reply (log, subscribe) */
#define CONFIG_DEFAULT_MAX_OUTPUT (2u * 1024 * 1024)
#define CONFIG_DEFAULT_HELLO_TIMEOUT 10
#define CONFIG_DEFAULT_IDLE_TIMEOUT 300

struct config {
    const char *data_dir;    /* --data DIR; borrowed from argv or a literal */
    const char *listen;      /* --listen HOST:PORT; NULL: no TCP listener ("none") */
    const char *unix_path;   /* --unix PATH; NULL: none */
    const char *tokens_file; /* --tokens FILE; NULL: DIR/admin.token */
    const char *port_file;   /* --port-file FILE; NULL: none */
    int sync;                /* 1: fsync before acknowledging (full); 0: none (tests) */
    uint64_t max_connections;
    uint64_t max_frame;     /* bytes; applies to requests and replies */
    uint64_t max_batch;     /* events per append */
    uint64_t max_event;     /* bytes of one event's data (packed), on append only; at most
                               max_frame - CONFIG_FRAME_OVERHEAD */
    uint64_t max_output;    /* bytes of replies queued for one connection before reading pauses */
    uint64_t hello_timeout; /* seconds from connect to a valid hello */
    uint64_t idle_timeout;  /* seconds without activity before closing; 0: never */
    enum fl_diag_level log_level;
};

enum config_result { CONFIG_RUN, CONFIG_EXIT_OK, CONFIG_EXIT_USAGE };

/* Fill c with defaults, then apply argv. Returns CONFIG_RUN, or CONFIG_EXIT_OK after --help, or
 * CONFIG_EXIT_USAGE after printing what was wrong to stderr. Strings borrow from argv. */
enum config_result config_parse(struct config *c, int argc, char **argv);

/* Split "HOST:PORT" (or "[V6]:PORT") into host (at most hostlen bytes with NUL) and port.
 * An empty host means every address. Returns 0, or -1 if spec is malformed. */
int config_split_listen(const char *spec, char *host, size_t hostlen, uint16_t *port);

#endif
