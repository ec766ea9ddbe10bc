/* Device events through a watch: added, removed, timeouts, per-domain filtering, close. */
#include "check.h"

static void test_events(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    vdev_domain *dom0 = vdev_domain_lookup_by_id(conn, 0);
    vdev_watch *all = vdev_conn_watch(conn);
    CHECK(all != NULL);
    vdev_watch *only0 = vdev_domain_watch(dom0);
    CHECK(only0 != NULL);

    vdev_event *ev = (vdev_event *)&conn;
    CHECK(vdev_watch_next(all, 0, &ev) == 0); /* nothing yet */
    CHECK(ev == NULL);
    CHECK_OK();

    vdev_attr attrs[] = {{"uname", "file:/img/e.img"}, {"dev", "xvdb"}, {"mode", "w"}};
    char *ref = vdev_domain_attach(demo, "disk", attrs, 3);
    CHECK(ref != NULL);
    CHECK(vdev_watch_next(all, 5000, &ev) == 1);
    CHECK(ev->kind == VDEV_EVENT_ADDED);
    CHECK(ev->domain_id == 1 && strcmp(ev->domain_name, "demo") == 0);
    CHECK(strcmp(ev->device_type, "disk") == 0 && strcmp(ev->reference, "51728") == 0);
    CHECK(ev->state == NULL);
    vdev_event_free(ev);

    CHECK(vdev_domain_destroy_vdev(demo, "disk", ref) == 0);
    int removed = 0;
    while (!removed) {
        CHECK(vdev_watch_next(all, 5000, &ev) == 1);
        CHECK(strcmp(ev->reference, "51728") == 0);
        if (ev->kind == VDEV_EVENT_STATE_CHANGED)
            CHECK(ev->state != NULL);
        removed = ev->kind == VDEV_EVENT_REMOVED;
        vdev_event_free(ev);
    }
    vdev_string_free(ref);
    /* Nothing happened to Domain-0. */
    CHECK(vdev_watch_next(only0, 100, &ev) == 0);
    CHECK(ev == NULL);

    CHECK_FAILS(vdev_watch_next(NULL, 0, &ev), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_watch_next(all, 0, NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_conn_watch(NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_watch(NULL), VDEV_ERR_NULL_ARGUMENT);
    vdev_event_free(NULL);
    vdev_watch_free(NULL);

    /* Closing the connection ends the watches. */
    CHECK(vdev_conn_close(conn) == 0);
    CHECK_FAILS(vdev_watch_next(all, 2000, &ev), VDEV_ERR_CLOSED);
    CHECK_NULL(vdev_domain_watch(demo), VDEV_ERR_CLOSED);
    vdev_watch_free(all);
    vdev_watch_free(only0);
    vdev_domain_free(demo);
    vdev_domain_free(dom0);
}

int main(void)
{
    test_events();
    done("events");
    return 0;
}
