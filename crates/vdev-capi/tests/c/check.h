/* Tiny assertion helpers for the libvdev C tests. */
#ifndef VDEV_TEST_CHECK_H
#define VDEV_TEST_CHECK_H

#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vdev.h>

static int checks_passed;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n  last error: %d (%s): %s\n",       \
                    __FILE__, __LINE__, #cond, vdev_last_error_code(),                    \
                    vdev_error_code_name(vdev_last_error_code()),                         \
                    vdev_last_error_message());                                           \
            exit(1);                                                                      \
        }                                                                                 \
        checks_passed++;                                                                  \
    } while (0)

/* The last call failed with `code` and left a real message. */
#define CHECK_ERROR(code)                                                                 \
    do {                                                                                  \
        CHECK(vdev_last_error_code() == (code));                                          \
        CHECK(strlen(vdev_last_error_message()) > 10);                                    \
        CHECK(strcmp(vdev_last_error_message(), "no error") != 0);                        \
    } while (0)

/* An int-returning call fails with -1 and `code`. */
#define CHECK_FAILS(expr, code)                                                           \
    do {                                                                                  \
        int r_ = (expr);                                                                  \
        CHECK(r_ == -1);                                                                  \
        CHECK_ERROR(code);                                                                \
    } while (0)

/* A pointer-returning call fails with NULL and `code`. */
#define CHECK_NULL(expr, code)                                                            \
    do {                                                                                  \
        const void *p_ = (expr);                                                          \
        CHECK(p_ == NULL);                                                                \
        CHECK_ERROR(code);                                                                \
    } while (0)

/* The message of the last error contains `text`. */
#define CHECK_MESSAGE_HAS(text) CHECK(strstr(vdev_last_error_message(), (text)) != NULL)

/* The last call succeeded. */
#define CHECK_OK() CHECK(vdev_last_error_code() == VDEV_OK)

static inline void vda_set(vdev_vda *e, const char *name, const char *value)
{
    memset(e, 0, sizeof *e);
    strncpy(e->name, name, sizeof e->name - 1);
    strncpy(e->value, value, sizeof e->value - 1);
}

/* The value of attribute `name` among the `per` entries of one device, or NULL. */
static inline const char *vda_get(const vdev_vda *dev, int per, const char *name)
{
    for (int i = 0; i < per; i++)
        if (strcmp(dev[i].name, name) == 0)
            return dev[i].value;
    return NULL;
}

/* How many devices of `type` the domain lists. */
static inline int count_devices(vdev_domain *dom, const char *type)
{
    vdev_device *devs = NULL;
    int n = vdev_domain_list_devices(dom, type, &devs);
    CHECK(n >= 0);
    vdev_device_list_free(devs, n);
    return n;
}

/* The value of attribute `name` of device `ref` (type `type`) in the heap listing; NULL when
 * absent. The caller frees the result. */
static inline char *listed(vdev_domain *dom, const char *type, const char *ref, const char *name)
{
    vdev_device *devs = NULL;
    int n = vdev_domain_list_devices(dom, type, &devs);
    CHECK(n >= 0);
    char *out = NULL;
    for (int d = 0; d < n; d++) {
        if (strcmp(devs[d].reference, ref) != 0)
            continue;
        for (size_t i = 0; i < devs[d].nattrs; i++)
            if (strcmp(devs[d].attrs[i].name, name) == 0)
                out = strdup(devs[d].attrs[i].value);
    }
    vdev_device_list_free(devs, n);
    return out;
}

/* Device `ref` lists `name` as `want` (NULL: does not list it). */
static inline void check_listed(vdev_domain *dom, const char *type, const char *ref,
                                const char *name, const char *want)
{
    char *v = listed(dom, type, ref, name);
    CHECK(want == NULL ? v == NULL : v != NULL && strcmp(v, want) == 0);
    free(v);
}

static void done(const char *program)
{
    printf("%s: %d checks passed\n", program, checks_passed);
}

#endif
