/* main.c: flowlogd: argv → config, start the server, run it until SIGTERM/SIGINT. */
#include "config.h"
#include "diag.h"
#include "server.h"

int main(int argc, char **argv)
{
    struct config cfg;
    struct server srv;
    int rc;

    switch (config_parse(&cfg, argc, argv)) {
    case CONFIG_EXIT_OK:
        return 0;
    case CONFIG_EXIT_USAGE:
        return 2;
    case CONFIG_RUN:
        break;
    }
    fl_diag_set_level(cfg.log_level);
    rc = server_start(&srv, &cfg);
    if (rc == 0)
        rc = server_run(&srv);
    server_free(&srv);
    return rc == 0 ? 0 : 1;
}
