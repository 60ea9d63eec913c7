/*
 * corefn native function ABI, version 1.
 *
 * A native function is a shared library (built with -shared -fPIC) that
 * exports
 *
 *     int corefn_handle(const corefn_request *req, corefn_response *res);
 *
 * (or another name given as the descriptor's "handler"). A worker process
 * loads the library once and calls the function from several threads at
 * once: it must be thread-safe. Optionally the library exports
 *
 *     int corefn_init(void);   called once after loading; non-zero = refuse
 *
 * Memory: everything in `req` belongs to corefn and is valid only during the
 * call; strings are NOT NUL-terminated (use the lengths). The response is
 * built through the functions in `res`, which copy what they are given, so
 * the library never hands memory to corefn and never frees corefn's. A
 * library that allocates per call frees before it returns.
 *
 * Result: return 0 for a response built with `res`; any other value makes
 * the client get 502 naming that value. Status defaults to 200 and the
 * content type to "text/plain; charset=utf-8" when there is a body.
 * Headers that corefn owns (content-length, date, connection,
 * transfer-encoding) are dropped.
 *
 * Reload: when the library file changes on disk, new requests run the new
 * copy; the old copy is unloaded (dlclose) after the last request running
 * on it has returned. Replace the file by writing a new one and renaming it
 * over the old path.
 *
 * Faults: a crash (SIGSEGV, abort, ...) ends the worker process: the
 * client gets 502 and the worker is replaced. Native code cannot be
 * interrupted, so a call past its timeout_ms gets 504 and the worker is
 * replaced too; requests running on other threads of that worker get 502.
 */
#ifndef COREFN_H
#define COREFN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COREFN_ABI_VERSION 1

typedef struct corefn_str {
    const char *ptr;
    size_t len;
} corefn_str;

typedef struct corefn_header {
    corefn_str name;  /* as the client sent it */
    corefn_str value;
} corefn_header;

typedef struct corefn_request {
    uint32_t abi_version;           /* COREFN_ABI_VERSION */
    corefn_str method;              /* "GET", "POST", ... */
    corefn_str path;                /* "/api/hello", without the query */
    corefn_str query;               /* "a=1&b=2", without '?'; may be empty */
    const corefn_header *headers;
    size_t header_count;
    const uint8_t *body;            /* de-chunked request body */
    size_t body_len;
    const corefn_header *env;       /* the descriptor's "env" */
    size_t env_count;
} corefn_request;

typedef struct corefn_response corefn_response;

struct corefn_response {
    /* Sets the status, 200..=599; returns 0, or -1 when out of range. */
    int (*set_status)(corefn_response *res, int status);
    /* Adds a header (NUL-terminated name and value); returns 0, or -1 for
     * a name that is not an HTTP token or a value with control characters. */
    int (*header)(corefn_response *res, const char *name, const char *value);
    /* Appends to the body; returns 0, or -1 past the response size limit. */
    int (*write)(corefn_response *res, const void *data, size_t len);
    void *corefn_private;           /* corefn's state; do not touch */
};

int corefn_handle(const corefn_request *req, corefn_response *res);

#ifdef __cplusplus
}
#endif

#endif /* COREFN_H */
