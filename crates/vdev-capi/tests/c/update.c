/* Changing a device in place: vdev_domain_update_vdev() over the proposal's vdev_vda array, the
 * unbounded vdev_domain_update(), the errors each refusal gives (nothing changed), and the
 * VDEV_EVENT_UPDATED event with what changed. */
#include "check.h"

static void test_update(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(demo != NULL);
    vdev_watch *watch = vdev_domain_watch(demo);
    CHECK(watch != NULL);

    /* A CD-ROM drive; its medium changes in place. */
    vdev_vda cd[] = {{"uname", "file:/isos/a.iso"}, {"dev", "xvdc"}, {"mode", "r"},
                     {"devtype", "cdrom"}};
    CHECK(vdev_domain_create_vdev(demo, "disk", cd, 4) == 0);
    vdev_event *ev = NULL;
    CHECK(vdev_watch_next(watch, 5000, &ev) == 1 && ev->kind == VDEV_EVENT_ADDED);
    vdev_event_free(ev);

    vdev_vda medium[] = {{"uname", "file:/isos/b.iso"}};
    CHECK(vdev_domain_update_vdev(demo, "disk", "51744", medium, 1) == 0);
    check_listed(demo, "disk", "51744", "uname", "file:/isos/b.iso");
    CHECK(vdev_watch_next(watch, 5000, &ev) == 1);
    CHECK(ev->kind == VDEV_EVENT_UPDATED && strcmp(ev->reference, "51744") == 0);
    CHECK(ev->nattrs == 1 && strcmp(ev->attrs[0].name, "uname") == 0);
    CHECK(strcmp(ev->attrs[0].value, "file:/isos/b.iso") == 0);
    vdev_event_free(ev);

    /* The unbounded form takes a long path; an empty one ejects. */
    char longpath[200];
    snprintf(longpath, sizeof longpath, "file:/srv/isos/%0150d.iso", 7);
    vdev_attr big[] = {{"uname", longpath}};
    CHECK(vdev_domain_update(demo, "disk", "51744", big, 1) == 0);
    check_listed(demo, "disk", "51744", "uname", longpath);
    vdev_attr eject[] = {{"uname", ""}};
    CHECK(vdev_domain_update(demo, "disk", "51744", eject, 1) == 0);
    check_listed(demo, "disk", "51744", "uname", "");

    /* A NIC's link. */
    vdev_vda down[] = {{"link", "down"}};
    CHECK(vdev_domain_update_vdev(demo, "network", "0", down, 1) == 0);
    check_listed(demo, "network", "0", "link", "down");

    /* Refusals, each changing nothing. */
    vdev_vda fixed[] = {{"dev", "xvdd"}};
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51744", fixed, 1),
                VDEV_ERR_INVALID_ATTRIBUTE);
    vdev_vda plain[] = {{"uname", "file:/isos/c.iso"}};
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51712", plain, 1),
                VDEV_ERR_INVALID_ATTRIBUTE);
    vdev_vda sideways[] = {{"link", "sideways"}};
    CHECK_FAILS(vdev_domain_update_vdev(demo, "network", "0", sideways, 1),
                VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "99999", medium, 1),
                VDEV_ERR_DEVICE_NOT_FOUND);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51744", NULL, 0),
                VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51744", NULL, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51744", medium, -1),
                VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_update_vdev(NULL, "disk", "51744", medium, 1),
                VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", NULL, medium, 1), VDEV_ERR_NULL_ARGUMENT);
    vdev_vda unterminated[1];
    memset(unterminated, 'x', sizeof unterminated);
    CHECK_FAILS(vdev_domain_update_vdev(demo, "disk", "51744", unterminated, 1),
                VDEV_ERR_NAME_TOO_LONG);
    vdev_attr null_value[] = {{"uname", NULL}};
    CHECK_FAILS(vdev_domain_update(demo, "disk", "51744", null_value, 1), VDEV_ERR_NULL_ARGUMENT);
    check_listed(demo, "disk", "51744", "uname", "");
    check_listed(demo, "disk", "51712", "uname", "file:/var/lib/xen/images/demo.img");
    check_listed(demo, "network", "0", "link", "down");

    /* Read-only connections refuse. */
    vdev_conn *ro = vdev_conn_open_readonly("mock:///default");
    vdev_domain *rodemo = vdev_domain_lookup_by_name(ro, "demo");
    CHECK_FAILS(vdev_domain_update_vdev(rodemo, "network", "0", down, 1), VDEV_ERR_READ_ONLY);
    vdev_domain_free(rodemo);
    CHECK(vdev_conn_close(ro) == 0);

    vdev_watch_free(watch);
    vdev_domain_free(demo);
    CHECK(vdev_conn_close(conn) == 0);
}

int main(void)
{
    test_update();
    done("update");
    return 0;
}
