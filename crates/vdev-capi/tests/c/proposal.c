/* The proposal's three calls: return encoding, padding, too-small arrays, fixed-size limits,
 * backend name -> id translation, NULL and empty arguments, read-only refusal, and an
 * attach -> list -> detach round trip. */
#include "check.h"
#include <unistd.h>

#define MAX 256

static vdev_vda buf[MAX];

static void fill_sentinel(void) { memset(buf, 0xAA, sizeof buf); }

static int untouched(int from, int to)
{
    const unsigned char *p = (const unsigned char *)&buf[from];
    for (size_t i = 0; i < (size_t)(to - from) * sizeof(vdev_vda); i++)
        if (p[i] != 0xAA)
            return 0;
    return 1;
}

static void test_encoding_and_round_trip(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    CHECK(vdev_conn_is_readonly(conn) == 0);
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(dom != NULL);
    CHECK(strcmp(vdev_domain_get_name(dom), "demo") == 0);
    CHECK(vdev_domain_get_id(dom) == 1);

    /* Size query: attr NULL, maxattr 0. */
    int r = vdev_domain_get_vdevs(dom, "disk", NULL, 0);
    CHECK(r > 0);
    int n = r & 0xFFFF, per = r >> 16;
    CHECK(n == 1);
    CHECK(per >= 8);

    /* The same answer into an array; entries after n*per are not touched. */
    fill_sentinel();
    CHECK(vdev_domain_get_vdevs(dom, "disk", buf, MAX) == r);
    CHECK(strcmp(vda_get(buf, per, "virtual-device"), "51712") == 0);
    CHECK(strcmp(vda_get(buf, per, "dev"), "xvda") == 0);
    CHECK(strcmp(vda_get(buf, per, "bkdom-name"), "Domain-0") == 0);
    for (int i = 1; i < per; i++)
        CHECK(strcmp(buf[i - 1].name, buf[i].name) < 0); /* name order */
    CHECK(untouched(n * per, MAX));

    /* Too small by one entry: -1, nothing written. Exactly the size: fine. */
    fill_sentinel();
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", buf, n * per - 1), VDEV_ERR_BUFFER_TOO_SMALL);
    CHECK(untouched(0, MAX));
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", buf, 0), VDEV_ERR_BUFFER_TOO_SMALL);
    CHECK(vdev_domain_get_vdevs(dom, "disk", buf, n * per) == r);
    CHECK_OK();

    /* Create (backend given by name), list, destroy. */
    vdev_vda disk[4];
    vda_set(&disk[0], "uname", "file:/var/lib/xen/images/data.img");
    vda_set(&disk[1], "dev", "xvdb");
    vda_set(&disk[2], "mode", "w");
    vda_set(&disk[3], "backend", "Domain-0");
    CHECK(vdev_domain_create_vdev(dom, "disk", disk, 4) == 0);
    CHECK_OK();
    r = vdev_domain_get_vdevs(dom, "disk", buf, MAX);
    CHECK((r & 0xFFFF) == 2);
    per = r >> 16;
    const vdev_vda *second = &buf[per];
    CHECK(strcmp(vda_get(second, per, "virtual-device"), "51728") == 0);
    CHECK(strcmp(vda_get(second, per, "uname"), "file:/var/lib/xen/images/data.img") == 0);
    CHECK(strcmp(vda_get(second, per, "backend-id"), "0") == 0);
    /* The same again: the device exists. */
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 4), VDEV_ERR_DEVICE_EXISTS);
    CHECK(vdev_domain_destroy_vdev(dom, "disk", "51728") == 0);
    CHECK((vdev_domain_get_vdevs(dom, "disk", NULL, 0) & 0xFFFF) == 1);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", "51728"), VDEV_ERR_DEVICE_NOT_FOUND);

    /* A backend name that is no domain. */
    vda_set(&disk[3], "backend", "nosuch");
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 4), VDEV_ERR_DOMAIN_NOT_FOUND);
    CHECK_MESSAGE_HAS("backend domain 'nosuch' not found");
    vda_set(&disk[3], "backend", "0"); /* digits: an id, passed on */
    CHECK(vdev_domain_create_vdev(dom, "disk", disk, 4) == 0);
    CHECK(vdev_domain_destroy_vdev(dom, "disk", "51728") == 0);

    /* Devices with different numbers of attributes: padded with all-zero entries. */
    vdev_vda nic[2];
    vda_set(&nic[0], "mac", "00:16:3e:00:00:42");
    vda_set(&nic[1], "ip", "10.0.0.2");
    CHECK(vdev_domain_create_vdev(dom, "network", nic, 2) == 0);
    fill_sentinel();
    r = vdev_domain_get_vdevs(dom, "network", buf, MAX);
    CHECK((r & 0xFFFF) == 2);
    per = r >> 16;
    /* Device 0 (handle 0, no ip) has one attribute less than device 1 (with ip). */
    CHECK(vda_get(&buf[0], per, "ip") == NULL);
    CHECK(strcmp(vda_get(&buf[per], per, "ip"), "10.0.0.2") == 0);
    const vdev_vda *pad = &buf[per - 1];
    CHECK(pad->name[0] == '\0' && pad->value[0] == '\0');
    static const vdev_vda zero;
    CHECK(memcmp(pad, &zero, sizeof zero) == 0);
    for (int i = 0; i < per; i++)
        CHECK(buf[per + i].name[0] != '\0'); /* the longest device has no padding */
    CHECK(untouched(2 * per, MAX));
    /* Its count of non-empty entries equals the unlimited listing's. */
    vdev_device *devs = NULL;
    int nd = vdev_domain_list_devices(dom, "network", &devs);
    CHECK(nd == 2);
    CHECK(devs[0].nattrs == (size_t)per - 1 && devs[1].nattrs == (size_t)per);
    vdev_device_list_free(devs, nd);
    CHECK(vdev_domain_destroy_vdev(dom, "network", "1") == 0);

    /* A type without devices: 0, nothing written. */
    CHECK(vdev_domain_destroy_vdev(dom, "network", "0") == 0);
    fill_sentinel();
    CHECK(vdev_domain_get_vdevs(dom, "network", buf, MAX) == 0);
    CHECK_OK();
    CHECK(untouched(0, MAX));

    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_fixed_size_limits(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(dom != NULL);

    /* Input: a name or value with no NUL in its field is refused, not truncated. */
    vdev_vda disk[3];
    vda_set(&disk[0], "uname", "file:/img/c.img");
    vda_set(&disk[1], "dev", "xvdc");
    vda_set(&disk[2], "mode", "r");
    memset(disk[0].name, 'n', sizeof disk[0].name);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 3), VDEV_ERR_NAME_TOO_LONG);
    CHECK_MESSAGE_HAS("attr[0].name");
    vda_set(&disk[0], "uname", "file:/img/c.img");
    memset(disk[0].value, 'v', sizeof disk[0].value);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 3), VDEV_ERR_VALUE_TOO_LONG);
    /* 15 and 63 bytes fit. */
    vda_set(&disk[0], "uname", "file:/img/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    CHECK(strlen(disk[0].value) == 63);
    CHECK(vdev_domain_create_vdev(dom, "disk", disk, 3) == 0);
    CHECK((vdev_domain_get_vdevs(dom, "disk", buf, MAX) & 0xFFFF) == 2);
    CHECK(vdev_domain_destroy_vdev(dom, "disk", "51744") == 0);
    CHECK((vdev_domain_get_vdevs(dom, "disk", NULL, 0) & 0xFFFF) == 1);

    /* Output: a value longer than 63 bytes makes get_vdevs fail, writing nothing. */
    char longpath[200] = "file:/var/lib/xen/images/";
    while (strlen(longpath) < 120)
        strcat(longpath, "x");
    vdev_attr la[3] = {{"uname", longpath}, {"dev", "xvdc"}, {"mode", "r"}};
    char *ref = vdev_domain_attach(dom, "disk", la, 3);
    CHECK(ref != NULL && strcmp(ref, "51744") == 0);
    fill_sentinel();
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", buf, MAX), VDEV_ERR_VALUE_TOO_LONG);
    CHECK_MESSAGE_HAS("uname");
    CHECK(untouched(0, MAX));
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", NULL, 0), VDEV_ERR_VALUE_TOO_LONG);
    CHECK(vdev_domain_destroy_vdev(dom, "disk", ref) == 0);
    vdev_string_free(ref);

    /* Other refusals of create. */
    vda_set(&disk[0], "uname", "file:/img/c.img");
    vdev_vda bad[4];
    memcpy(bad, disk, sizeof disk);
    memset(&bad[3], 0, sizeof bad[3]);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", bad, 4), VDEV_ERR_INVALID_ARGUMENT);
    vda_set(&bad[3], "dev", "xvdd");
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", bad, 4), VDEV_ERR_INVALID_ATTRIBUTE);
    vda_set(&bad[3], "color", "red");
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", bad, 4), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 2), VDEV_ERR_MISSING_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", NULL, 0), VDEV_ERR_MISSING_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "floppy", disk, 3), VDEV_ERR_UNSUPPORTED);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "floppy", buf, MAX), VDEV_ERR_UNSUPPORTED);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "a-device-type-name-far-longer-than-32-bytes", buf, MAX),
                VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", "../etc"), VDEV_ERR_INVALID_ATTRIBUTE);
    CHECK((vdev_domain_get_vdevs(dom, "disk", NULL, 0) & 0xFFFF) == 1); /* nothing created */

    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
}

/* A state-file host with a third domain and a device type with a long attribute name. */
static void test_state_file(void)
{
    char dir[] = "/tmp/vdev-capi-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[128], uri[160], lock[140];
    snprintf(path, sizeof path, "%s/host.json", dir);
    snprintf(lock, sizeof lock, "%s.lock", path);
    snprintf(uri, sizeof uri, "mock://%s", path);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("{\"version\": 1, \"domains\": ["
          "{\"id\": 0, \"name\": \"Domain-0\", \"devices\": []},"
          "{\"id\": 1, \"name\": \"demo\", \"devices\": ["
          "  {\"type\": \"gpu\", \"ref\": \"0000:01:00.0\", \"state\": \"connected\","
          "   \"attrs\": {\"slot\": \"0000:01:00.0\", \"a-very-long-attribute-name\": \"x\"}}]},"
          "{\"id\": 5, \"name\": \"storage\", \"devices\": []}],"
          "\"device_types\": [{\"name\": \"gpu\", \"ref_attribute\": \"slot\", \"attributes\": ["
          "  {\"name\": \"slot\", \"required\": true},"
          "  {\"name\": \"a-very-long-attribute-name\"}]}]}",
          f);
    CHECK(fclose(f) == 0);

    vdev_conn *conn = vdev_conn_open(uri);
    CHECK(conn != NULL);
    vdev_domain *dom = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(dom != NULL);

    /* Backend by name -> id, done by the library. */
    vdev_vda disk[4];
    vda_set(&disk[0], "uname", "phy:/dev/vg/data");
    vda_set(&disk[1], "dev", "xvdb");
    vda_set(&disk[2], "mode", "w");
    vda_set(&disk[3], "backend", "storage");
    CHECK(vdev_domain_create_vdev(dom, "disk", disk, 4) == 0);
    int r = vdev_domain_get_vdevs(dom, "disk", buf, MAX);
    CHECK(r > 0);
    int per = r >> 16;
    CHECK((r & 0xFFFF) == 1);
    CHECK(strcmp(vda_get(buf, per, "backend-id"), "5") == 0);
    CHECK(strcmp(vda_get(buf, per, "bkdom-name"), "storage") == 0);
    CHECK(strcmp(vda_get(buf, per, "backend"), "/local/domain/5/backend/vbd/1/51728") == 0);
    CHECK(vdev_domain_destroy_vdev(dom, "disk", "51728") == 0);

    /* A listed name longer than 15 bytes is left out; the rest of the device is there. */
    fill_sentinel();
    r = vdev_domain_get_vdevs(dom, "gpu", buf, MAX);
    CHECK(r == ((1 << 16) | 1));
    CHECK(strcmp(buf[0].name, "slot") == 0);
    CHECK(strcmp(buf[0].value, "0000:01:00.0") == 0);
    CHECK(untouched(1, MAX));
    /* The unlimited listing has it. */
    vdev_device *devs = NULL;
    CHECK(vdev_domain_list_devices(dom, "gpu", &devs) == 1);
    CHECK(strcmp(devs[0].reference, "0000:01:00.0") == 0);
    CHECK(devs[0].nattrs == 2);
    CHECK(strcmp(devs[0].attrs[0].name, "a-very-long-attribute-name") == 0);
    vdev_device_list_free(devs, 1);

    vdev_domain_free(dom);
    CHECK(vdev_conn_close(conn) == 0);
    unlink(path);
    unlink(lock);
    rmdir(dir);
}

static void test_null_and_empty(void)
{
    CHECK_NULL(vdev_conn_open(NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("'uri'");
    CHECK_NULL(vdev_conn_open(""), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_NULL(vdev_conn_open_readonly(NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_conn_open("nosuch:///default"), VDEV_ERR_NO_DRIVER);
    CHECK_MESSAGE_HAS("mock");
    CHECK_NULL(vdev_conn_open("mock:///default?bogus=1"), VDEV_ERR_INVALID_URI);
    CHECK_NULL(vdev_conn_open("not a uri"), VDEV_ERR_INVALID_URI);
    CHECK_FAILS(vdev_conn_close(NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_conn_is_readonly(NULL), VDEV_ERR_NULL_ARGUMENT);

    vdev_conn *conn = vdev_conn_open("test:///default");
    CHECK(conn != NULL);
    CHECK_NULL(vdev_domain_lookup_by_name(NULL, "demo"), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_lookup_by_name(conn, NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_lookup_by_name(conn, ""), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_NULL(vdev_domain_lookup_by_name(conn, "nosuch"), VDEV_ERR_DOMAIN_NOT_FOUND);
    CHECK_NULL(vdev_domain_lookup_by_name(conn, "1"), VDEV_ERR_DOMAIN_NOT_FOUND); /* a name */
    CHECK_NULL(vdev_domain_lookup_by_id(NULL, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_NULL(vdev_domain_lookup_by_id(conn, -1), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_NULL(vdev_domain_lookup_by_id(conn, 99), VDEV_ERR_DOMAIN_NOT_FOUND);
    vdev_domain *dom0 = vdev_domain_lookup_by_id(conn, 0);
    CHECK(dom0 != NULL && strcmp(vdev_domain_get_name(dom0), "Domain-0") == 0);
    CHECK(vdev_domain_get_id(dom0) == 0);
    vdev_domain_free(dom0);
    CHECK_NULL(vdev_domain_get_name(NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_get_id(NULL), VDEV_ERR_NULL_ARGUMENT);

    vdev_domain *dom = vdev_domain_lookup_by_id(conn, 1);
    CHECK(dom != NULL);
    vdev_vda e[1];
    vda_set(&e[0], "dev", "xvdb");
    CHECK_FAILS(vdev_domain_get_vdevs(NULL, "disk", buf, MAX), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, NULL, buf, MAX), VDEV_ERR_NULL_ARGUMENT);
    CHECK_MESSAGE_HAS("'type'");
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "", buf, MAX), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", NULL, 4), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", buf, -1), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_create_vdev(NULL, "disk", e, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_create_vdev(dom, NULL, e, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "", e, 1), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", NULL, 1), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", e, -1), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_destroy_vdev(NULL, "disk", "51712"), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, NULL, "51712"), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", ""), VDEV_ERR_INVALID_ARGUMENT);
    /* Free functions accept NULL; a success resets the last error. */
    vdev_domain_free(NULL);
    CHECK_OK();
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", ""), VDEV_ERR_INVALID_ARGUMENT);
    vdev_reset_last_error();
    CHECK_OK();
    CHECK(strcmp(vdev_last_error_message(), "no error") == 0);

    /* After close, a domain handle is still freeable but refuses calls. */
    CHECK(vdev_conn_close(conn) == 0);
    CHECK_FAILS(vdev_domain_get_vdevs(dom, "disk", buf, MAX), VDEV_ERR_CLOSED);
    CHECK(strcmp(vdev_domain_get_name(dom), "demo") == 0);
    vdev_domain_free(dom);

    /* Code names. */
    CHECK(strcmp(vdev_error_code_name(VDEV_ERR_READ_ONLY), "read-only") == 0);
    CHECK(strcmp(vdev_error_code_name(VDEV_ERR_BUFFER_TOO_SMALL), "buffer-too-small") == 0);
    CHECK(strcmp(vdev_error_code_name(VDEV_OK), "ok") == 0);
    CHECK(strcmp(vdev_error_code_name(12345), "unknown") == 0);
}

static void test_read_only(void)
{
    vdev_conn *ro = vdev_conn_open_readonly("mock:///default");
    CHECK(ro != NULL);
    CHECK(vdev_conn_is_readonly(ro) == 1);
    vdev_domain *dom = vdev_domain_lookup_by_name(ro, "demo");
    CHECK(dom != NULL);
    int r = vdev_domain_get_vdevs(dom, "disk", buf, MAX); /* reading works */
    CHECK((r & 0xFFFF) == 1);
    vdev_vda disk[3];
    vda_set(&disk[0], "uname", "file:/img/b.img");
    vda_set(&disk[1], "dev", "xvdb");
    vda_set(&disk[2], "mode", "w");
    CHECK_FAILS(vdev_domain_create_vdev(dom, "disk", disk, 3), VDEV_ERR_READ_ONLY);
    CHECK_MESSAGE_HAS("read-only");
    CHECK_FAILS(vdev_domain_destroy_vdev(dom, "disk", "51712"), VDEV_ERR_READ_ONLY);
    CHECK((vdev_domain_get_vdevs(dom, "disk", NULL, 0) & 0xFFFF) == 1);
    vdev_domain_free(dom);
    CHECK(vdev_conn_close(ro) == 0);

    /* ?readonly in the URI is the same. */
    ro = vdev_conn_open("mock:///default?readonly");
    CHECK(ro != NULL && vdev_conn_is_readonly(ro) == 1);
    CHECK(vdev_conn_close(ro) == 0);
}

int main(void)
{
    test_encoding_and_round_trip();
    test_fixed_size_limits();
    test_state_file();
    test_null_and_empty();
    test_read_only();
    done("proposal");
    return 0;
}
