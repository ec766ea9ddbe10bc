/* libvdev built with the `libvirt` feature, against a real libvirtd started by the test harness
 * (QEMU under TCG, no guest OS). argv[1] is the libvirt+ URI, argv[2] a running domain, argv[3]
 * a shut-off one, argv[4] and argv[5] two raw images.
 * - The proposal's three calls on the running domain: a SCSI disk created from attributes, got
 *   back by type with its source, destroyed by its reference (its libvirt alias).
 * - Bad input is refused with typed errors and changes nothing: a missing image, a taken target,
 *   an unknown bus, an unknown flag bit.
 * - Scopes: a disk in the stored configuration only (VDEV_AFFECT_CONFIG), in both, then removed
 *   from both; a NIC's link changed live through vdev_domain_update_flags().
 * - The shut-off domain: a disk added to its stored configuration, listed "configured", removed.
 * Everything made is removed again (the program runs twice: once plainly, once under valgrind);
 * the harness then checks with virsh that both definitions of both domains are as they were. */
#include "check.h"

/* The reference (libvirt alias) of the device of `type` whose attribute `name` is `value`; the
 * caller frees it. NULL when there is none. `state` gets its state (freed by the caller). */
static char *find_ref(vdev_domain *dom, const char *type, const char *name, const char *value,
                      char **state)
{
    vdev_device *devs = NULL;
    int n = vdev_domain_list_devices(dom, type, &devs);
    CHECK(n >= 0);
    char *ref = NULL;
    for (int d = 0; d < n && ref == NULL; d++)
        for (size_t i = 0; i < devs[d].nattrs; i++)
            if (strcmp(devs[d].attrs[i].name, name) == 0 &&
                strcmp(devs[d].attrs[i].value, value) == 0) {
                ref = strdup(devs[d].reference);
                if (state != NULL)
                    *state = strdup(devs[d].state);
                break;
            }
    vdev_device_list_free(devs, n);
    return ref;
}

static void proposal_calls(vdev_domain *vm, const char *img)
{
    vdev_vda disk[3] = {{"source", ""}, {"bus", "scsi"}, {"target", "sdq"}};
    CHECK(strlen(img) < sizeof disk[0].value);
    strcpy(disk[0].value, img);
    CHECK(vdev_domain_create_vdev(vm, "disk", disk, 3) == 0);
    /* The same target again is taken, and nothing changes. */
    int before = count_devices(vm, "disk");
    CHECK_FAILS(vdev_domain_create_vdev(vm, "disk", disk, 3), VDEV_ERR_DEVICE_EXISTS);
    CHECK(count_devices(vm, "disk") == before);

    vdev_vda attrs[256];
    int r = vdev_domain_get_vdevs(vm, "disk", attrs, 256);
    CHECK(r > 0);
    int ndev = r & 0xFFFF, per = r >> 16, found = 0;
    for (int d = 0; d < ndev; d++) {
        const char *source = vda_get(&attrs[d * per], per, "source");
        if (source != NULL && strcmp(source, img) == 0) {
            found++;
            const char *bus = vda_get(&attrs[d * per], per, "bus");
            const char *target = vda_get(&attrs[d * per], per, "target");
            CHECK(bus != NULL && strcmp(bus, "scsi") == 0);
            CHECK(target != NULL && strcmp(target, "sdq") == 0);
        }
    }
    CHECK(found == 1);

    char *ref = find_ref(vm, "disk", "source", img, NULL);
    CHECK(ref != NULL && strncmp(ref, "ua-", 3) == 0);
    CHECK(vdev_domain_destroy_vdev(vm, "disk", ref) == 0);
    CHECK_FAILS(vdev_domain_destroy_vdev(vm, "disk", ref), VDEV_ERR_DEVICE_NOT_FOUND);
    free(ref);
    CHECK(find_ref(vm, "disk", "source", img, NULL) == NULL);
}

static void bad_input(vdev_domain *vm, const char *img)
{
    int before = count_devices(vm, "disk");
    vdev_attr missing[] = {{"source", "/nonexistent/c.raw"}};
    CHECK_NULL(vdev_domain_attach(vm, "disk", missing, 1), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_MESSAGE_HAS("/nonexistent/c.raw");
    vdev_attr bus[] = {{"source", img}, {"bus", "sometimes"}};
    CHECK_NULL(vdev_domain_attach(vm, "disk", bus, 2), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_MESSAGE_HAS("bus");
    vdev_attr ok[] = {{"source", img}};
    CHECK_NULL(vdev_domain_attach_flags(vm, "disk", ok, 1, 0x40), VDEV_ERR_INVALID_ARGUMENT);
    CHECK(count_devices(vm, "disk") == before);
}

static void scopes(vdev_domain *vm, const char *img)
{
    /* In the stored configuration only: listed with scope persistent, not live. */
    vdev_attr disk[] = {{"source", img}};
    char *ref = vdev_domain_attach_flags(vm, "disk", disk, 1, VDEV_AFFECT_CONFIG);
    CHECK(ref != NULL);
    char *scope = listed(vm, "disk", ref, "scope");
    CHECK(scope != NULL && strcmp(scope, "persistent") == 0);
    free(scope);
    CHECK(vdev_domain_detach(vm, "disk", ref, VDEV_DETACH_DEFAULT_TIMEOUT, VDEV_AFFECT_CONFIG) ==
          0);
    CHECK(find_ref(vm, "disk", "source", img, NULL) == NULL);
    vdev_string_free(ref);

    /* In both. */
    ref = vdev_domain_attach_flags(vm, "disk", disk, 1, VDEV_AFFECT_LIVE | VDEV_AFFECT_CONFIG);
    CHECK(ref != NULL);
    scope = listed(vm, "disk", ref, "scope");
    CHECK(scope != NULL && strcmp(scope, "both") == 0);
    free(scope);
    CHECK(vdev_domain_detach(vm, "disk", ref, VDEV_DETACH_DEFAULT_TIMEOUT,
                             VDEV_AFFECT_LIVE | VDEV_AFFECT_CONFIG) == 0);
    CHECK(find_ref(vm, "disk", "source", img, NULL) == NULL);
    vdev_string_free(ref);

    /* A NIC on the user backend, its link taken down and up live. On USB: its removal needs
     * no guest, so it goes at once and the program can run twice. */
    vdev_attr nic[] = {{"netdev", "user"}, {"model", "usb-net"}, {"mac", "52:54:00:c0:ff:ee"}};
    char *n = vdev_domain_attach(vm, "network", nic, 3);
    CHECK(n != NULL);
    check_listed(vm, "network", n, "link", "up");
    vdev_attr down[] = {{"link", "down"}};
    CHECK(vdev_domain_update_flags(vm, "network", n, down, 1, VDEV_AFFECT_LIVE) == 0);
    check_listed(vm, "network", n, "link", "down");
    vdev_attr sideways[] = {{"link", "sideways"}};
    CHECK_FAILS(vdev_domain_update(vm, "network", n, sideways, 1), VDEV_ERR_INVALID_ATTRIBUTE);
    check_listed(vm, "network", n, "link", "down");
    vdev_attr up[] = {{"link", "up"}};
    CHECK(vdev_domain_update(vm, "network", n, up, 1) == 0);
    check_listed(vm, "network", n, "link", "up");
    CHECK(vdev_domain_detach(vm, "network", n, VDEV_DETACH_DEFAULT_TIMEOUT, 0) == 0);
    CHECK(find_ref(vm, "network", "mac", "52:54:00:c0:ff:ee", NULL) == NULL);
    vdev_string_free(n);
}

static void stopped(vdev_conn *conn, const char *name, const char *img)
{
    vdev_domain *off = vdev_domain_lookup_by_name(conn, name);
    CHECK(off != NULL);
    /* A domain that does not run has no id. */
    CHECK(vdev_domain_get_id(off) == -1);
    CHECK_ERROR(VDEV_ERR_UNSUPPORTED);
    vdev_attr disk[] = {{"source", img}};
    char *ref = vdev_domain_attach(off, "disk", disk, 1);
    CHECK(ref != NULL);
    char *state = NULL;
    char *found = find_ref(off, "disk", "source", img, &state);
    CHECK(found != NULL && strcmp(found, ref) == 0);
    CHECK(state != NULL && strcmp(state, "configured") == 0);
    free(found);
    free(state);
    CHECK(vdev_domain_destroy_vdev(off, "disk", ref) == 0);
    CHECK(find_ref(off, "disk", "source", img, NULL) == NULL);
    vdev_string_free(ref);
    vdev_domain_free(off);
}

/* Connections opened and closed one after another, each with a device removed (which starts
 * listening to libvirt's events on a connection of its own): what one leaves behind would show
 * N times under valgrind. */
static void short_connections(const char *uri, const char *name, int n)
{
    for (int i = 0; i < n; i++) {
        vdev_conn *c = vdev_conn_open(uri);
        CHECK(c != NULL);
        vdev_domain *vm = vdev_domain_lookup_by_name(c, name);
        CHECK(vm != NULL);
        vdev_attr nic[] = {{"netdev", "user"}, {"model", "usb-net"}};
        char *ref = vdev_domain_attach(vm, "network", nic, 2);
        CHECK(ref != NULL);
        CHECK(vdev_domain_detach(vm, "network", ref, VDEV_DETACH_DEFAULT_TIMEOUT, 0) == 0);
        vdev_string_free(ref);
        vdev_domain_free(vm);
        CHECK(vdev_conn_close(c) == 0);
    }
}

int main(int argc, char **argv)
{
    CHECK(argc == 6);
    short_connections(argv[1], argv[2], 3);
    vdev_conn *conn = vdev_conn_open(argv[1]);
    CHECK(conn != NULL);
    vdev_domain *vm = vdev_domain_lookup_by_name(conn, argv[2]);
    CHECK(vm != NULL);
    CHECK(vdev_domain_get_id(vm) > 0);

    proposal_calls(vm, argv[4]);
    bad_input(vm, argv[5]);
    scopes(vm, argv[5]);
    stopped(conn, argv[3], argv[4]);

    vdev_domain_free(vm);
    CHECK(vdev_conn_close(conn) == 0);
    done("libvirt");
    return 0;
}
