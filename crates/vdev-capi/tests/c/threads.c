/* Several threads, each on its own connection, plus two threads sharing one connection for
 * reads; the last error is per thread. */
#include "check.h"
#include <pthread.h>

#define THREADS 4
#define ROUNDS 15

static vdev_conn *shared;

static void *worker(void *arg)
{
    int id = *(int *)arg;
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(dom != NULL);
    vdev_vda disk[3], out[64];
    vda_set(&disk[0], "uname", "file:/img/t.img");
    vda_set(&disk[1], "dev", "xvdb");
    vda_set(&disk[2], "mode", "w");
    for (int i = 0; i < ROUNDS; i++) {
        CHECK(vdev_domain_create_vdev(dom, "disk", disk, 3) == 0);
        int r = vdev_domain_get_vdevs(dom, "disk", out, 64);
        CHECK((r & 0xFFFF) == 2);
        CHECK(vdev_domain_destroy_vdev(dom, "disk", "51728") == 0);
        /* An error of this thread, with this thread's name in it. */
        char name[32];
        snprintf(name, sizeof name, "nosuch-%d-%d", id, i);
        CHECK(vdev_domain_lookup_by_name(conn, name) == NULL);
        CHECK(vdev_last_error_code() == VDEV_ERR_DOMAIN_NOT_FOUND);
        CHECK(strstr(vdev_last_error_message(), name) != NULL);
    }
    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        vdev_domain **doms = NULL;
        int n = vdev_conn_list_domains(shared, &doms);
        CHECK(n == 2);
        vdev_device *devs = NULL;
        int nd = vdev_domain_list_devices(doms[1], NULL, &devs);
        CHECK(nd == 2);
        vdev_device_list_free(devs, nd);
        vdev_domain_list_free(doms, n);
        CHECK_OK();
    }
    return NULL;
}

int main(void)
{
    shared = vdev_conn_open("mock:///default");
    CHECK(shared != NULL);
    pthread_t t[THREADS + 2];
    int ids[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ids[i] = i;
        CHECK(pthread_create(&t[i], NULL, worker, &ids[i]) == 0);
    }
    CHECK(pthread_create(&t[THREADS], NULL, reader, NULL) == 0);
    CHECK(pthread_create(&t[THREADS + 1], NULL, reader, NULL) == 0);
    for (int i = 0; i < THREADS + 2; i++)
        CHECK(pthread_join(t[i], NULL) == 0);
    /* The main thread's last error is untouched by the others. */
    CHECK_OK();
    CHECK(vdev_conn_close(shared) == 0);
    done("threads");
    return 0;
}
