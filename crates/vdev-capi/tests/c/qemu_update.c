/* Changing devices in place on a real QEMU (started by the test harness, no guest OS): argv[1]
 * is the qemu:/// URI of its QMP socket, argv[2] and argv[3] two raw images. A CD-ROM drive's
 * medium is changed with vdev_domain_update_vdev() and ejected with vdev_domain_update(), a NIC's
 * link taken down and up, each read back from the listing; refusals change nothing; both devices
 * are destroyed at the end (the program runs twice: once plainly, once under valgrind), and the
 * harness checks with its own QMP client that nothing is left. */
#include "check.h"

int main(int argc, char **argv)
{
    CHECK(argc == 4);
    vdev_conn *conn = vdev_conn_open(argv[1]);
    CHECK(conn != NULL);
    vdev_domain *vm = vdev_domain_lookup_by_name(conn, "vm");
    CHECK(vm != NULL);

    vdev_attr cd[] = {{"media", "cdrom"}, {"source", argv[2]}, {"id", "ccd"}};
    char *cd_ref = vdev_domain_attach(vm, "disk", cd, 3);
    CHECK(cd_ref != NULL && strcmp(cd_ref, "ccd") == 0);
    vdev_string_free(cd_ref);
    check_listed(vm, "disk", "ccd", "source", argv[2]);

    vdev_vda medium[1] = {{"source", ""}};
    CHECK(strlen(argv[3]) < sizeof medium[0].value);
    strcpy(medium[0].value, argv[3]);
    CHECK(vdev_domain_update_vdev(vm, "disk", "ccd", medium, 1) == 0);
    check_listed(vm, "disk", "ccd", "source", argv[3]);

    /* Refused, naming the attribute; the medium stays. */
    vdev_attr fixed[] = {{"media", "disk"}};
    CHECK_FAILS(vdev_domain_update(vm, "disk", "ccd", fixed, 1), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_MESSAGE_HAS("media");
    vdev_attr missing[] = {{"source", "/nonexistent/c.iso"}};
    CHECK_FAILS(vdev_domain_update(vm, "disk", "ccd", missing, 1), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_MESSAGE_HAS("source");
    vdev_attr other[] = {{"source", argv[2]}};
    CHECK_FAILS(vdev_domain_update(vm, "disk", "nosuchdisk", other, 1),
                VDEV_ERR_DEVICE_NOT_FOUND);
    check_listed(vm, "disk", "ccd", "source", argv[3]);

    vdev_attr eject[] = {{"source", ""}};
    CHECK(vdev_domain_update(vm, "disk", "ccd", eject, 1) == 0);
    char *left = listed(vm, "disk", "ccd", "source");
    CHECK(left == NULL || left[0] == '\0');
    free(left);

    /* On USB: its removal needs no guest, so the program can run twice. */
    vdev_attr nic[] = {{"model", "usb-net"}};
    char *n = vdev_domain_attach(vm, "network", nic, 1);
    CHECK(n != NULL);
    check_listed(vm, "network", n, "link", "up");
    vdev_vda down[] = {{"link", "down"}};
    CHECK(vdev_domain_update_vdev(vm, "network", n, down, 1) == 0);
    check_listed(vm, "network", n, "link", "down");
    vdev_vda up[] = {{"link", "up"}};
    CHECK(vdev_domain_update_vdev(vm, "network", n, up, 1) == 0);
    check_listed(vm, "network", n, "link", "up");
    vdev_vda bad[] = {{"link", "sideways"}};
    CHECK_FAILS(vdev_domain_update_vdev(vm, "network", n, bad, 1), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_MESSAGE_HAS("link");
    check_listed(vm, "network", n, "link", "up");

    CHECK(vdev_domain_destroy_vdev(vm, "disk", "ccd") == 0);
    CHECK(vdev_domain_destroy_vdev(vm, "network", n) == 0);
    vdev_string_free(n);

    vdev_domain_free(vm);
    CHECK(vdev_conn_close(conn) == 0);
    done("qemu_update");
    return 0;
}
