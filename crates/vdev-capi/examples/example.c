/* Attach a disk to the mock host's "demo" domain, list the disks, detach it.
 * Build: cc example.c $(pkg-config --cflags --libs vdev) */
#include <stdio.h>
#include <vdev.h>

static int fail(const char *what)
{
    fprintf(stderr, "%s: %s (%s)\n", what, vdev_last_error_message(),
            vdev_error_code_name(vdev_last_error_code()));
    return 1;
}

int main(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    if (conn == NULL)
        return fail("open");
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    if (dom == NULL)
        return fail("lookup");

    /* The backend domain is given by name; the library passes its id on. */
    vdev_vda disk[] = {
        {"uname", "file:/var/lib/xen/images/data.img"},
        {"dev", "xvdb"},
        {"mode", "w"},
        {"backend", "Domain-0"},
    };
    if (vdev_domain_create_vdev(dom, "disk", disk, 4) < 0)
        return fail("create");

    vdev_vda attrs[64];
    int r = vdev_domain_get_vdevs(dom, "disk", attrs, 64);
    if (r < 0)
        return fail("list");
    int ndev = r & 0xFFFF, per = r >> 16; /* (attributes per device << 16) + devices */
    for (int d = 0; d < ndev; d++)
        for (int i = 0; i < per; i++) {
            const vdev_vda *a = &attrs[d * per + i];
            if (a->name[0] != '\0') /* an empty name pads a shorter device */
                printf("disk %d: %s = %s\n", d, a->name, a->value);
        }

    if (vdev_domain_destroy_vdev(dom, "disk", "51728") < 0)
        return fail("destroy");
    vdev_domain_free(dom);
    return vdev_conn_close(conn) < 0 ? fail("close") : 0;
}
