/* Never returns: the worker answers 504 at timeout_ms and is replaced. */
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    (void)req;
    (void)res;
    volatile unsigned long n = 0;
    for (;;)
        n++;
    return 0;
}
