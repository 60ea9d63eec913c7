/* The smallest native function: "Hello from C!" (build: make -C examples/native). */
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    (void)req;
    static const char body[] = "Hello from C!\n";
    res->header(res, "content-type", "text/plain; charset=utf-8");
    return res->write(res, body, sizeof body - 1);
}
