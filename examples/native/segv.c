/* Crashes with SIGSEGV: the client gets 502 and the worker is replaced. */
#include <stddef.h>
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    (void)req;
    (void)res;
    volatile int *nowhere = NULL;
    *nowhere = 1;
    return 0;
}
