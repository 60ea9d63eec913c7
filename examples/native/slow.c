/* Sleeps ?ms=N milliseconds (default 200), then names its build: compile
 * with -DVERSION='"v2"' to tell two copies apart during a reload. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../../runtimes/native/corefn.h"

#ifndef VERSION
#define VERSION "v1"
#endif

static long query_ms(const corefn_request *req) {
    const char *q = req->query.ptr;
    size_t len = req->query.len;
    for (size_t i = 0; i + 3 <= len; i++) {
        if ((i == 0 || q[i - 1] == '&') && memcmp(q + i, "ms=", 3) == 0) {
            long ms = 0;
            for (size_t j = i + 3; j < len && q[j] >= '0' && q[j] <= '9'; j++)
                ms = ms * 10 + (q[j] - '0');
            return ms;
        }
    }
    return 200;
}

int corefn_handle(const corefn_request *req, corefn_response *res) {
    long ms = query_ms(req);
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
    static const char body[] = VERSION "\n";
    return res->write(res, body, sizeof body - 1);
}
