/* The proposal's three calls against a real QEMU (started by the test harness, no guest OS):
 * argv[1] is the qemu:/// URI of its QMP socket, argv[2] a raw image. A SCSI disk is created,
 * listed back with its attributes, and destroyed; the harness checks QEMU with its own client. */
#include "check.h"

int main(int argc, char **argv)
{
    CHECK(argc == 3);
    vdev_conn *conn = vdev_conn_open(argv[1]);
    CHECK(conn != NULL);
    vdev_domain *vm = vdev_domain_lookup_by_name(conn, "vm");
    CHECK(vm != NULL);

    vdev_vda disk[3] = {{"source", ""}, {"format", "raw"}, {"id", "cdisk"}};
    CHECK(strlen(argv[2]) < sizeof disk[0].value);
    strcpy(disk[0].value, argv[2]);
    CHECK(vdev_domain_create_vdev(vm, "disk", disk, 3) == 0);
    /* The same id again is taken. */
    CHECK_FAILS(vdev_domain_create_vdev(vm, "disk", disk, 3), VDEV_ERR_DEVICE_EXISTS);

    vdev_vda attrs[64];
    int r = vdev_domain_get_vdevs(vm, "disk", attrs, 64);
    CHECK(r > 0);
    int ndev = r & 0xFFFF, per = r >> 16, found = 0;
    for (int d = 0; d < ndev; d++) {
        const char *id = NULL, *source = NULL, *bus = NULL;
        for (int i = 0; i < per; i++) {
            const vdev_vda *a = &attrs[d * per + i];
            if (strcmp(a->name, "id") == 0)
                id = a->value;
            else if (strcmp(a->name, "source") == 0)
                source = a->value;
            else if (strcmp(a->name, "bus") == 0)
                bus = a->value;
        }
        if (id != NULL && strcmp(id, "cdisk") == 0) {
            found = 1;
            CHECK(source != NULL && strcmp(source, argv[2]) == 0);
            CHECK(bus != NULL && strcmp(bus, "scsi") == 0);
        }
    }
    CHECK(found);

    CHECK(vdev_domain_destroy_vdev(vm, "disk", "cdisk") == 0);
    CHECK_FAILS(vdev_domain_destroy_vdev(vm, "disk", "cdisk"), VDEV_ERR_DEVICE_NOT_FOUND);
    vdev_domain_free(vm);
    CHECK(vdev_conn_close(conn) == 0);
    done("qemu");
    return 0;
}
