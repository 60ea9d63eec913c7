/* JSON echo: answers {"method":"POST","echo":<request body>} for a JSON body. */
#include <string.h>
#include "../../runtimes/native/corefn.h"

int corefn_handle(const corefn_request *req, corefn_response *res) {
    res->header(res, "content-type", "application/json");
    res->write(res, "{\"method\":\"", 11);
    res->write(res, req->method.ptr, req->method.len);
    res->write(res, "\",\"echo\":", 9);
    if (req->body_len == 0)
        res->write(res, "null", 4);
    else
        res->write(res, req->body, req->body_len);
    return res->write(res, "}", 1);
}
