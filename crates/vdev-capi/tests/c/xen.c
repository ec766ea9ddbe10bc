/* The proposal's calls against the real Xen of the lab (tests/xenlab): argv[1] is a xen:/// URI
 * of the lab's xenstored (hotplug=no: from outside Domain-0 nothing runs the vif script, which
 * the guest does not need to connect its frontend), argv[2] the guest's name, argv[3] the MAC
 * address to give the new device.
 *
 * A network device is created; once the guest's netfront has connected, it has written
 * `event-channel-tx` and `event-channel-rx` (16 bytes each, one more than vdev_vda.name holds).
 * vdev_domain_get_vdevs() must still list the device, without those two; the unlimited
 * listing has them. */
#include "check.h"

#include <time.h>

#define MAX 256
static vdev_vda buf[MAX];

static void pause_a_little(void)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
    CHECK(argc == 4);
    const char *mac = argv[3];
    CHECK(strlen(mac) < sizeof((vdev_vda *)0)->value);
    vdev_conn *conn = vdev_conn_open(argv[1]);
    CHECK(conn != NULL);
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, argv[2]);
    CHECK(dom != NULL);

    vdev_vda nic[1];
    memset(nic, 0, sizeof nic);
    strcpy(nic[0].name, "mac");
    strcpy(nic[0].value, mac);
    CHECK(vdev_domain_create_vdev(dom, "network", nic, 1) == 0);

    /* Until the guest has connected: at most 60 s (the guest answers within a second). */
    const vdev_vda *ours = NULL;
    int per = 0;
    for (int tries = 0; tries < 600 && ours == NULL; tries++) {
        int r = vdev_domain_get_vdevs(dom, "network", buf, MAX);
        CHECK(r > 0);
        int n = r & 0xFFFF;
        per = r >> 16;
        for (int d = 0; d < n; d++) {
            const vdev_vda *dev = &buf[d * per];
            const char *m = vda_get(dev, per, "mac");
            const char *state = vda_get(dev, per, "state");
            if (m != NULL && strcmp(m, mac) == 0 && state != NULL && strcmp(state, "4") == 0)
                ours = dev;
        }
        if (ours == NULL)
            pause_a_little();
    }
    CHECK(ours != NULL);
    const char *handle = vda_get(ours, per, "handle");
    CHECK(handle != NULL && handle[0] != '\0');
    CHECK(vda_get(ours, per, "tx-ring-ref") != NULL);
    CHECK(vda_get(ours, per, "event-channel-tx") == NULL);
    for (int i = 0; i < per; i++)
        CHECK(strlen(ours[i].name) <= 15);

    /* The unlimited listing has every attribute, the two long names included. */
    vdev_device *devs = NULL;
    int n = vdev_domain_list_devices(dom, "network", &devs);
    CHECK(n > 0);
    int seen = 0;
    for (int d = 0; d < n; d++) {
        if (strcmp(devs[d].reference, handle) != 0)
            continue;
        for (size_t i = 0; i < devs[d].nattrs; i++)
            if (strcmp(devs[d].attrs[i].name, "event-channel-tx") == 0 ||
                strcmp(devs[d].attrs[i].name, "event-channel-rx") == 0)
                seen++;
    }
    CHECK(seen == 2);
    vdev_device_list_free(devs, n);

    char ref[16];
    CHECK(strlen(handle) < sizeof ref);
    strcpy(ref, handle);
    CHECK(vdev_domain_destroy_vdev(dom, "network", ref) == 0);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "network", ref), VDEV_ERR_DEVICE_NOT_FOUND);
    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
    done("xen");
    return 0;
}
