/* Desired state from C: vdev_conn_plan(), vdev_conn_apply() and vdev_domain_export() on the mock,
 * their JSON results (the shapes of `vdev plan --json` and `vdev apply --json`), a second apply
 * that changes nothing, a batch whose third entry fails (nothing of it stays), a pending removal,
 * documents that are refused naming the place, with nothing changed, and the scope flags. */
#include "check.h"

static const char *DOC =
    "domains:\n"
    "  demo:\n"
    "    exclusive: [network]\n"
    "    devices:\n"
    "      - type: disk\n"
    "        attrs: {uname: 'file:/img/a.img', dev: xvdb, mode: rw}\n"
    "      - type: disk\n"
    "        attrs: {uname: 'file:/img/b.img', dev: xvdc, mode: r}\n";

/* How many times `needle` occurs in `s`. */
static int occurrences(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p != NULL; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_plan_apply_reapply_export(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(demo != NULL);

    /* The plan: remove the NIC, add two disks; nothing changes yet. */
    char *plan = NULL;
    CHECK(vdev_conn_plan(conn, DOC, &plan) == 3);
    CHECK_OK();
    CHECK(plan != NULL && strncmp(plan, "{\"changes\":[", 12) == 0);
    CHECK(occurrences(plan, "\"op\":\"add\"") == 2);
    CHECK(occurrences(plan, "\"op\":\"remove\"") == 1);
    CHECK(strstr(plan, "\"domain\":\"demo\"") != NULL);
    CHECK(strstr(plan, "\"ref\":null") != NULL); /* an add's reference is the driver's to choose */
    CHECK(strstr(plan, "\"uname\":\"file:/img/a.img\"") != NULL);
    CHECK(strstr(plan, "\"entry\":1") != NULL);
    vdev_string_free(plan);
    CHECK(count_devices(demo, "network") == 1 && count_devices(demo, "disk") == 1);

    /* Apply: every change done; the adds carry their new references. */
    char *report = NULL;
    CHECK(vdev_conn_apply(conn, DOC, VDEV_DETACH_DEFAULT_TIMEOUT, 0, &report) == 0);
    CHECK_OK();
    CHECK(report != NULL && strstr(report, "\"changed\":true") != NULL);
    CHECK(occurrences(report, "\"outcome\":\"done\"") == 3);
    CHECK(strstr(report, "\"ref\":\"51728\"") != NULL);
    vdev_string_free(report);
    CHECK(count_devices(demo, "network") == 0 && count_devices(demo, "disk") == 3);
    check_listed(demo, "disk", "51728", "mode", "w"); /* rw is w, as the mock lists it */

    /* Again: nothing to plan, nothing to do. */
    CHECK(vdev_conn_plan(conn, DOC, &plan) == 0);
    CHECK(strcmp(plan, "{\"changes\":[]}") == 0);
    vdev_string_free(plan);
    CHECK(vdev_conn_apply(conn, DOC, VDEV_DETACH_DEFAULT_TIMEOUT, 0, &report) == 0);
    CHECK(strcmp(report, "{\"changed\":false,\"changes\":[]}") == 0);
    vdev_string_free(report);

    /* The export of what the domain has now plans to nothing. */
    char *exported = NULL;
    CHECK(vdev_domain_export(demo, &exported) == 0);
    CHECK(exported != NULL && strstr(exported, "file:/img/b.img") != NULL);
    CHECK(vdev_conn_plan(conn, exported, &plan) == 0);
    vdev_string_free(plan);
    vdev_string_free(exported);

    vdev_domain_free(demo);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_failed_batch_leaves_nothing(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(demo != NULL);
    const char *doc = "domains:\n"
                      "  demo:\n"
                      "    devices:\n"
                      "      - {type: disk, attrs: {uname: 'file:/img/1', dev: xvdb, mode: w}}\n"
                      "      - {type: disk, attrs: {uname: 'file:/img/2', dev: xvdc, mode: w}}\n"
                      "      - {type: disk, attrs: {uname: 'file:/img/3', dev: xvdd, mode: sideways}}\n";
    char *report = NULL;
    CHECK_FAILS(vdev_conn_apply(conn, doc, VDEV_DETACH_DEFAULT_TIMEOUT, 0, &report),
                VDEV_ERR_INVALID_ATTRIBUTE); /* the entry's own condition */
    CHECK_MESSAGE_HAS("entry 2 (domains.demo.devices[2]");
    /* The report is still handed out: every add of the batch failed together. */
    CHECK(report != NULL && strstr(report, "\"changed\":false") != NULL);
    CHECK(occurrences(report, "\"outcome\":\"failed\"") == 3);
    CHECK(strstr(report, "\"error\":{\"code\":\"invalid-attribute\"") != NULL);
    vdev_string_free(report);
    CHECK(count_devices(demo, "disk") == 1);

    vdev_domain_free(demo);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_pending_removal(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default?removal=pending");
    CHECK(conn != NULL);
    const char *doc = "{\"domains\": {\"demo\": {\"devices\": "
                      "[{\"type\": \"disk\", \"state\": \"absent\", \"attrs\": {\"dev\": \"xvda\"}}]}}}";
    char *report = NULL;
    CHECK(vdev_conn_apply(conn, doc, 0, 0, &report) == 1); /* one removal still pending */
    CHECK_OK();
    CHECK(strstr(report, "\"outcome\":\"removal-pending\"") != NULL);
    vdev_string_free(report);
    CHECK(vdev_conn_close(conn) == 0);
}

static void test_bad_documents(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(demo != NULL);
    char *before = NULL;
    CHECK(vdev_domain_export(demo, &before) == 0);

    static const struct {
        const char *doc, *says;
    } bad[] = {
        {"domains: {demo: [\n", "line "},
        {"domains:\n  demo:\n    devices:\n      - type: disk\n        atrs: {dev: xvdb}\n",
         "domains.demo.devices[0].atrs (line 5 column 9): unknown field `atrs`"},
        {"{\"domains\": {\"demo\": {\"devices\": [{\"type\": \"disk\", \"attrs\": {\"mode\": \"w\"}}]}}}",
         "none of the attributes that identify a disk"},
        {"domains: {demo: {exclusive: [network], devices: [{type: disk, attrs: {dev: xvdb, "
         "uname: 'file:/a', mode: w, colour: red}}]}}",
         "domains.demo.devices[0].attrs: invalid attribute 'colour'"},
        {"", "the document is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out = (char *)"untouched";
        CHECK_FAILS(vdev_conn_plan(conn, bad[i].doc, &out), VDEV_ERR_INVALID_DOCUMENT);
        CHECK_MESSAGE_HAS(bad[i].says);
        CHECK(out == NULL);
        out = (char *)"untouched";
        CHECK_FAILS(vdev_conn_apply(conn, bad[i].doc, VDEV_DETACH_DEFAULT_TIMEOUT, 0, &out),
                    VDEV_ERR_INVALID_DOCUMENT);
        CHECK_MESSAGE_HAS(bad[i].says);
        CHECK(out == NULL); /* nothing was started */
    }
    char *out = NULL;
    CHECK_FAILS(vdev_conn_apply(conn, "domains: {nosuch: {}}", -1, 0, &out),
                VDEV_ERR_DOMAIN_NOT_FOUND);
    CHECK(out == NULL);

    /* Nothing changed: the export is the same as before. */
    char *after = NULL;
    CHECK(vdev_domain_export(demo, &after) == 0);
    CHECK(strcmp(before, after) == 0);
    CHECK(count_devices(demo, "network") == 1);
    vdev_string_free(before);
    vdev_string_free(after);

    /* The boundary's own checks. */
    CHECK_FAILS(vdev_conn_plan(conn, NULL, &out), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_conn_plan(conn, "domains: {}", NULL), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_conn_plan(NULL, "domains: {}", &out), VDEV_ERR_NULL_ARGUMENT);
    CHECK_FAILS(vdev_conn_apply(conn, "domains: {}", -1, 64, &out), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("VDEV_AFFECT_LIVE");
    CHECK_FAILS(vdev_conn_apply(conn, "domains: {}", -2, 0, &out), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_FAILS(vdev_domain_export(NULL, &out), VDEV_ERR_NULL_ARGUMENT);
    CHECK(vdev_conn_plan(conn, "domains: {}", &out) == 0);
    vdev_string_free(out);

    vdev_domain_free(demo);
    CHECK(vdev_conn_close(conn) == 0);
}

/* Scopes: the flags of attach, update, detach and apply reach the core as a scope. The mock
 * offers "live" only, so VDEV_AFFECT_LIVE works, VDEV_AFFECT_CONFIG (alone or with LIVE) is
 * VDEV_ERR_UNSUPPORTED, an unknown bit is VDEV_ERR_INVALID_ARGUMENT, and a refusal changes
 * nothing. */
static void test_scopes(void)
{
    vdev_conn *conn = vdev_conn_open("mock:///default");
    CHECK(conn != NULL);
    vdev_domain *demo = vdev_domain_lookup_by_name(conn, "demo");
    CHECK(demo != NULL);
    vdev_attr cd[] = {{"uname", ""}, {"dev", "xvdd"}, {"mode", "r"}, {"devtype", "cdrom"}};
    char *before = NULL;
    CHECK(vdev_domain_export(demo, &before) == 0);

    const unsigned int refused[] = {VDEV_AFFECT_CONFIG, VDEV_AFFECT_LIVE | VDEV_AFFECT_CONFIG};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        CHECK_NULL(vdev_domain_attach_flags(demo, "disk", cd, 4, refused[i]), VDEV_ERR_UNSUPPORTED);
        CHECK_MESSAGE_HAS("live");
    }
    CHECK_NULL(vdev_domain_attach_flags(demo, "disk", cd, 4, 64), VDEV_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE_HAS("flags");
    char *report = NULL;
    const char *doc = "domains: {demo: {devices: [{type: disk, attrs: {uname: 'file:/i.img', dev: xvde, mode: r}}]}}";
    CHECK_FAILS(vdev_conn_apply(conn, doc, -1, VDEV_AFFECT_CONFIG, &report), VDEV_ERR_UNSUPPORTED);
    vdev_string_free(report);
    char *after = NULL;
    CHECK(vdev_domain_export(demo, &after) == 0);
    CHECK(strcmp(before, after) == 0);
    vdev_string_free(after);

    char *ref = vdev_domain_attach_flags(demo, "disk", cd, 4, VDEV_AFFECT_LIVE);
    CHECK(ref != NULL);
    vdev_attr medium[] = {{"uname", "file:/iso/tools.iso"}};
    CHECK_FAILS(vdev_domain_update_flags(demo, "disk", ref, medium, 1, VDEV_AFFECT_CONFIG),
                VDEV_ERR_UNSUPPORTED);
    CHECK_FAILS(vdev_domain_update_flags(demo, "disk", ref, medium, 1, 8), VDEV_ERR_INVALID_ARGUMENT);
    CHECK(vdev_domain_update_flags(demo, "disk", ref, medium, 1, VDEV_AFFECT_LIVE) == 0);
    CHECK_FAILS(vdev_domain_detach(demo, "disk", ref, -1, VDEV_AFFECT_CONFIG), VDEV_ERR_UNSUPPORTED);
    CHECK(count_devices(demo, "disk") == 2);
    CHECK(vdev_domain_detach(demo, "disk", ref, -1, VDEV_DETACH_FORCE | VDEV_AFFECT_LIVE) == 0);
    CHECK(count_devices(demo, "disk") == 1);
    vdev_string_free(ref);

    CHECK(vdev_conn_apply(conn, doc, -1, VDEV_AFFECT_LIVE, &report) == 0);
    CHECK(strstr(report, "\"done\"") != NULL);
    vdev_string_free(report);
    CHECK(count_devices(demo, "disk") == 2);

    vdev_string_free(before);
    vdev_domain_free(demo);
    CHECK(vdev_conn_close(conn) == 0);
}

int main(void)
{
    test_plan_apply_reapply_export();
    test_failed_batch_leaves_nothing();
    test_pending_removal();
    test_bad_documents();
    test_scopes();
    done("desired");
    return 0;
}
