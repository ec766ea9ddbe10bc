/* Every driver is in the library: each scheme opens (or fails for a reason of its own), never
 * with VDEV_ERR_NO_DRIVER. Linked shared and static. */
#include "check.h"

static void opens_or_fails_on_its_own(const char *uri)
{
    vdev_conn *c = vdev_conn_open(uri);
    if (c != NULL) {
        CHECK(vdev_conn_close(c) == 0);
        return;
    }
    CHECK(vdev_last_error_code() != VDEV_ERR_NO_DRIVER);
    CHECK(vdev_last_error_code() != VDEV_OK);
}

int main(void)
{
    opens_or_fails_on_its_own("mock:///default");
    opens_or_fails_on_its_own("qemu:///nonexistent/vdev-test/vm.qmp");
    opens_or_fails_on_its_own("xen:///?socket=/nonexistent/vdev-test/xenstored");
    /* An unknown scheme is the one that answers "no driver". */
    CHECK(vdev_conn_open("nosuch:///x") == NULL);
    CHECK_ERROR(VDEV_ERR_NO_DRIVER);
    CHECK(strstr(vdev_last_error_message(), "qemu") != NULL);
    CHECK(strstr(vdev_last_error_message(), "xen") != NULL);
    done("drivers");
    return 0;
}
