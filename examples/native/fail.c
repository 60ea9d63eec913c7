/* A handler error: a non-zero return gives the client 502. */
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    (void)req;
    res->write(res, "partial output that is never sent", 33);
    return 7;
}
