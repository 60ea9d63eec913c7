/* Custom status and headers: 201 with x-corefn-example. */
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    (void)req;
    res->set_status(res, 201);
    res->header(res, "x-corefn-example", "status");
    res->header(res, "content-type", "text/plain");
    return res->write(res, "created\n", 8);
}
