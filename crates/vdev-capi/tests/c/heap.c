/* The calls without fixed sizes: domain lists, device lists with every attribute, attach with
 * long values, detach with timeout and force. */
#include "check.h"

static void test_domains(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain **doms = NULL;
    int n = vdev_conn_list_domains(conn, &doms);
    CHECK(n == 2);
    CHECK(strcmp(vdev_domain_get_name(doms[0]), "Domain-0") == 0 && vdev_domain_get_id(doms[0]) == 0);
    CHECK(strcmp(vdev_domain_get_name(doms[1]), "demo") == 0 && vdev_domain_get_id(doms[1]) == 1);
    vdev_domain_list_free(doms, n);
    CHECK_FAILS(vdev_conn_list_domains(NULL, &doms), VDEV_ERR_NULL_ARGUMENT);
    CHECK(doms == NULL);
    CHECK_FAILS(vdev_conn_list_domains(conn, NULL), VDEV_ERR_NULL_ARGUMENT);
    vdev_domain_list_free(NULL, 0);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_devices(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(dom != NULL);

    vdev_device *devs = NULL;
    int n = vdev_domain_list_devices(dom, NULL, &devs); /* every type */
    CHECK(n == 2);
    CHECK(strcmp(devs[0].device_type, "disk") == 0 && strcmp(devs[0].reference, "51712") == 0);
    CHECK(strcmp(devs[0].state, "connected") == 0);
    CHECK(strcmp(devs[1].device_type, "network") == 0 && strcmp(devs[1].reference, "0") == 0);
    int found = 0;
    for (size_t i = 0; i < devs[0].nattrs; i++)
        if (strcmp(devs[0].attrs[i].name, "dev") == 0 && strcmp(devs[0].attrs[i].value, "xvda") == 0)
            found = 1;
    CHECK(found);
    vdev_device_list_free(devs, n);

    /* A value far beyond the fixed 64 bytes. */
    char path[600] = "file:/srv/images/";
    while (strlen(path) < 500)
        strcat(path, "long-directory-name/");
    strcat(path, "disk.img");
    vdev_attr attrs[] = {{"uname", path}, {"dev", "xvdb"}, {"mode", "w"}, {"backend", "Domain-0"}};
    char *ref = vdev_domain_attach(dom, "disk", attrs, 4);
    CHECK(ref != NULL);
    CHECK(strcmp(ref, "51728") == 0);
    n = vdev_domain_list_devices(dom, "disk", &devs);
    CHECK(n == 2);
    const char *uname = NULL, *backend_id = NULL;
    for (size_t i = 0; i < devs[1].nattrs; i++) {
        if (strcmp(devs[1].attrs[i].name, "uname") == 0)
            uname = devs[1].attrs[i].value;
        if (strcmp(devs[1].attrs[i].name, "backend-id") == 0)
            backend_id = devs[1].attrs[i].value;
    }
    CHECK(uname != NULL && strcmp(uname, path) == 0);
    CHECK(backend_id != NULL && strcmp(backend_id, "0") == 0);
    vdev_device_list_free(devs, n);
    CHECK(vdev_domain_detach(dom, "disk", ref, 0, 0) == 0);
    vdev_string_free(ref);
    vdev_string_free(NULL);

    /* A type without devices. */
    vdev_device *none = (vdev_device *)&n;
    CHECK(vdev_domain_detach(dom, "network", "0", VDEV_DETACH_DEFAULT_TIMEOUT, 0) == 0);
    CHECK(vdev_domain_list_devices(dom, "network", &none) == 0);
    CHECK(none == NULL);
    vdev_device_list_free(NULL, 0);

    /* Errors. */
    vdev_attr nulls[] = {{NULL, "x"}};
    CHECK_NULL(vdev_domain_attach(dom, "disk", nulls, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("attrs[0].name");
    vdev_attr nullv[] = {{"dev", NULL}};
    CHECK_NULL(vdev_domain_attach(dom, "disk", nullv, 1), VDEV_ERR_NULL_ARGUMENT);
    vdev_attr empty[] = {{"", "x"}};
    CHECK_NULL(vdev_domain_attach(dom, "disk", empty, 1), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_NULL(vdev_domain_attach(dom, "disk", NULL, 2), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_attach(dom, "disk", attrs, -2), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_NULL(vdev_domain_attach(NULL, "disk", attrs, 4), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_attach(dom, NULL, attrs, 4), VDEV_ERR_NULL_ARGUMENT);
    vdev_attr badbk[] = {{"uname", "file:/x"}, {"dev", "xvdc"}, {"mode", "r"}, {"backend", "nosuch"}};
    CHECK_NULL(vdev_domain_attach(dom, "disk", badbk, 4), VDEV_ERR_DOMAIN_NOT_FOUND);
    CHECK_FAILS(vdev_domain_list_devices(dom, "disk", NULL), VDEV_ERR_NULL_ARGUMENT);
    devs = (vdev_device *)&n;
    CHECK_FAILS(vdev_domain_list_devices(NULL, "disk", &devs), VDEV_ERR_NULL_ARGUMENT);
    CHECK(devs == NULL);
    CHECK_FAILS(vdev_domain_list_devices(dom, "", &devs), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_detach(dom, "disk", "51712", -7, 0), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_detach(dom, "disk", "51712", 0, 0x40), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_detach(dom, "disk", "99999", 0, 0), VDEV_ERR_DEVICE_NOT_FOUND);
    CHECK_FAILS(vdev_domain_detach(NULL, "disk", "51712", 0, 0), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_detach(dom, "disk", NULL, 0, 0), VDEV_ERR_NULL_ARGUMENT);

    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_detach_options(void)
{
    /* The guest never releases the device by itself. */
    vdev_conn *conn = vdev_conn_open("mock:///default?removal=pending");
    CHECK(conn != NULL);
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK_FAILS(vdev_domain_detach(dom, "disk", "51712", 0, 0), VDEV_ERR_REMOVAL_PENDING);
    CHECK_FAILS(vdev_domain_detach(dom, "disk", "51712", 50, 0), VDEV_ERR_REMOVAL_PENDING);
    vdev_device *devs = NULL;
    CHECK(vdev_domain_list_devices(dom, "disk", &devs) == 1);
    CHECK(strcmp(devs[0].state, "removal-pending") == 0); /* still there */
    vdev_device_list_free(devs, 1);
    CHECK(vdev_domain_detach(dom, "disk", "51712", 0, VDEV_DETACH_FORCE) == 0);
    CHECK(vdev_domain_list_devices(dom, "disk", &devs) == 0);
    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);

    /* The guest releases it after 50 ms: a 5 s timeout sees it go; so does the default. */
    conn = vdev_conn_open("mock:///default?removal=50ms");
    dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(vdev_domain_detach(dom, "disk", "51712", 5000, 0) == 0);
    CHECK(vdev_domain_destroy_vdev(dom, "network", "0") == 0);
    CHECK(vdev_domain_list_devices(dom, NULL, &devs) == 0);
    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
}

int main(void)
{
    test_domains();
    test_devices();
    test_detach_options();
    done("heap");
    return 0;
}
