/* libkcore without external state: version, errors, route and service
 * tables, and the scheduler. */
#include <pthread.h>
#include <stdint.h>

#include "check.h"

/* Another thread's failure has its own message and leaves ours alone. */
static void *fail_elsewhere(void *arg) {
  char *msg = (char *)arg;
  kcore_route_table *t = NULL;
  if (kcore_route_table_new(&t) == KCORE_OK) {
    kcore_route_table_lookup(t, "10.0.0.1", NULL, NULL);
    kcore_last_error(msg, 128);
    kcore_route_table_free(t);
  }
  return NULL;
}

static void test_version_and_errors(void) {
  const char *v = kcore_version();
  CHECK(v != NULL && v[0] >= '0' && v[0] <= '9' && strchr(v, '.') != NULL);

  /* NULL parameters are reported, with a message naming the parameter. */
  CHECK_RC(kcore_route_table_new(NULL), KCORE_NULL_PARAMETER);
  CHECK_CONTAINS(last_error(), "out");
  size_t need = kcore_last_error(NULL, 0);
  CHECK(need == strlen("parameter out is NULL"));
  char small[6];
  size_t n = kcore_last_error(small, sizeof small);
  CHECK(n == need);
  CHECK_STREQ(small, "param"); /* truncated and NUL-terminated */

  char *s = (char *)"untouched";
  CHECK_RC(kcore_scheduler_schedule(NULL, "[]", &s), KCORE_NULL_PARAMETER);
  CHECK(s == NULL); /* out-params are cleared on failure */
  CHECK_CONTAINS(last_error(), "nodes_json");
  CHECK_RC(kcore_image_store_open("/tmp", NULL), KCORE_NULL_PARAMETER);
  CHECK_RC(kcore_client_get(NULL, "v1", "Pod", NULL, "x", &s),
           KCORE_NULL_PARAMETER);
  CHECK_RC(kcore_container_start(NULL), KCORE_NULL_PARAMETER);

  char theirs[128] = "";
  pthread_t th;
  CHECK(pthread_create(&th, NULL, fail_elsewhere, theirs) == 0);
  pthread_join(th, NULL);
  CHECK_STREQ(theirs, "parameter out_value is NULL");
  CHECK_STREQ(last_error(), "parameter c is NULL"); /* from container_start */

  /* A success clears the last error. */
  kcore_route_table *t = NULL;
  CHECK_OK(kcore_route_table_new(&t));
  CHECK(kcore_last_error(NULL, 0) == 0);
  kcore_route_table_free(t);

  /* Freeing NULL is a no-op. */
  kcore_route_table_free(NULL);
  kcore_service_table_free(NULL);
  kcore_image_store_free(NULL);
  kcore_runtime_free(NULL);
  kcore_container_free(NULL);
  kcore_client_free(NULL);
  kcore_string_free(NULL);
}

static void test_route_table(void) {
  kcore_route_table *t = NULL;
  CHECK_OK(kcore_route_table_new(&t));
  CHECK_OK(kcore_route_table_insert(t, "10.244.0.0/16", "cluster"));
  CHECK_OK(kcore_route_table_insert(t, "10.244.1.0/24", "node-a"));
  CHECK_OK(kcore_route_table_insert(t, "10.244.2.0/24", "node-b"));
  CHECK_OK(kcore_route_table_insert(t, "10.244.2.128/25", "node-c"));
  size_t len = 0;
  CHECK_OK(kcore_route_table_len(t, &len));
  CHECK(len == 4);

  char *cidr = NULL, *value = NULL;
  CHECK_OK(kcore_route_table_lookup(t, "10.244.1.7", &cidr, &value));
  CHECK_STREQ(cidr, "10.244.1.0/24");
  CHECK_STREQ(value, "node-a");
  kcore_string_free(cidr);
  kcore_string_free(value);

  /* The longest prefix wins. */
  CHECK_OK(kcore_route_table_lookup(t, "10.244.2.200", NULL, &value));
  CHECK_STREQ(value, "node-c");
  kcore_string_free(value);
  CHECK_OK(kcore_route_table_lookup(t, "10.244.2.5", NULL, &value));
  CHECK_STREQ(value, "node-b");
  kcore_string_free(value);
  CHECK_OK(kcore_route_table_lookup(t, "10.244.9.9", NULL, &value));
  CHECK_STREQ(value, "cluster");
  kcore_string_free(value);

  value = (char *)"x";
  CHECK_RC(kcore_route_table_lookup(t, "192.168.0.1", NULL, &value),
           KCORE_NOT_FOUND);
  CHECK(value == NULL);
  CHECK_CONTAINS(last_error(), "192.168.0.1");
  CHECK_RC(kcore_route_table_lookup(t, "not-an-ip", NULL, &value),
           KCORE_INVALID_ARGUMENT);
  CHECK_RC(kcore_route_table_insert(t, "10.244.1.1/24", "x"),
           KCORE_INVALID_ARGUMENT); /* host bits */
  CHECK_CONTAINS(last_error(), "10.244.1.0/24");
  CHECK_RC(kcore_route_table_insert(t, "10.0.0.0/33", "x"),
           KCORE_INVALID_ARGUMENT);

  /* Replace, then remove, then miss. */
  CHECK_OK(kcore_route_table_insert(t, "10.244.1.0/24", "node-a2"));
  CHECK_OK(kcore_route_table_lookup(t, "10.244.1.7", NULL, &value));
  CHECK_STREQ(value, "node-a2");
  kcore_string_free(value);
  CHECK_OK(kcore_route_table_remove(t, "10.244.1.0/24"));
  CHECK_RC(kcore_route_table_remove(t, "10.244.1.0/24"), KCORE_NOT_FOUND);
  CHECK_OK(kcore_route_table_lookup(t, "10.244.1.7", NULL, &value));
  CHECK_STREQ(value, "cluster");
  kcore_string_free(value);
  CHECK_OK(kcore_route_table_len(t, &len));
  CHECK(len == 3);
  kcore_route_table_free(t);
}

static void test_service_table(void) {
  kcore_service_table *t = NULL;
  CHECK_OK(kcore_service_table_new(&t));
  CHECK_OK(kcore_service_table_upsert(
      t, "{\"name\": \"default/web:http\", \"protocol\": \"TCP\","
         " \"cluster_ip\": \"10.96.0.10\", \"port\": 80, \"node_port\": 30080,"
         " \"load_balancer_ips\": [], \"affinity\": \"None\","
         " \"endpoints\": [{\"addr\": \"10.244.1.5:8080\", \"ready\": true},"
         "  {\"addr\": \"10.244.2.6:8080\", \"ready\": true},"
         "  {\"addr\": \"10.244.3.7:8080\", \"ready\": false}]}"));

  /* Every flow goes to a ready endpoint; the same flow always to the same. */
  int seen5 = 0, seen6 = 0;
  for (int port = 40000; port < 40064; port++) {
    char client[32];
    snprintf(client, sizeof client, "192.168.7.1:%d", port);
    char *ep = NULL, *again = NULL;
    CHECK_OK(kcore_service_table_pick(t, "10.96.0.10", 80, "tcp", client, &ep));
    CHECK_OK(kcore_service_table_pick(t, "10.96.0.10", 80, "TCP", client, &again));
    CHECK_STREQ(ep, again);
    if (ep && strcmp(ep, "10.244.1.5:8080") == 0) seen5++;
    else if (ep && strcmp(ep, "10.244.2.6:8080") == 0) seen6++;
    else CHECK(!"picked an endpoint that is not ready");
    kcore_string_free(ep);
    kcore_string_free(again);
  }
  CHECK(seen5 > 0 && seen6 > 0);

  /* The node port matches any address. */
  char *ep = NULL;
  CHECK_OK(kcore_service_table_pick(t, "172.16.0.9", 30080, "TCP",
                                    "1.2.3.4:5555", &ep));
  CHECK(ep != NULL && (strcmp(ep, "10.244.1.5:8080") == 0 ||
                       strcmp(ep, "10.244.2.6:8080") == 0));
  kcore_string_free(ep);
  ep = NULL;
  CHECK_RC(kcore_service_table_pick(t, "10.96.0.10", 80, "UDP",
                                    "1.2.3.4:5555", &ep),
           KCORE_NOT_FOUND);
  CHECK(ep == NULL);
  CHECK_RC(kcore_service_table_pick(t, "10.96.0.10", 80, "ICMP",
                                    "1.2.3.4:5555", &ep),
           KCORE_INVALID_ARGUMENT);
  CHECK_RC(kcore_service_table_upsert(t, "{\"name\": 1}"),
           KCORE_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "service_json");
  CHECK_OK(kcore_service_table_remove(t, "default/web:http"));
  CHECK_RC(kcore_service_table_remove(t, "default/web:http"), KCORE_NOT_FOUND);
  CHECK_RC(kcore_service_table_pick(t, "10.96.0.10", 80, "TCP",
                                    "1.2.3.4:5555", &ep),
           KCORE_NOT_FOUND);
  kcore_service_table_free(t);
}

static void test_scheduler(void) {
  const char *nodes =
      "[{\"metadata\": {\"name\": \"small\", \"labels\": "
      "{\"kubernetes.io/hostname\": \"small\"}},"
      "  \"status\": {\"allocatable\": {\"cpu\": \"1\", \"memory\": \"1Gi\", "
      "\"pods\": \"10\"}}},"
      " {\"metadata\": {\"name\": \"big\", \"labels\": "
      "{\"kubernetes.io/hostname\": \"big\", \"disk\": \"ssd\"}},"
      "  \"status\": {\"allocatable\": {\"cpu\": \"8\", \"memory\": \"16Gi\", "
      "\"pods\": \"10\"}}}]";
  const char *pods =
      "{\"kind\": \"PodList\", \"items\": ["
      " {\"metadata\": {\"name\": \"heavy\", \"namespace\": \"prod\"},"
      "  \"spec\": {\"containers\": [{\"name\": \"c\", \"image\": \"x\","
      "   \"resources\": {\"requests\": {\"cpu\": \"4\"}}}]}},"
      " {\"metadata\": {\"name\": \"wants-ssd\"},"
      "  \"spec\": {\"nodeSelector\": {\"disk\": \"ssd\"}, \"containers\": "
      "[{\"name\": \"c\", \"image\": \"x\"}]}},"
      " {\"metadata\": {\"name\": \"huge\", \"namespace\": \"prod\"},"
      "  \"spec\": {\"containers\": [{\"name\": \"c\", \"image\": \"x\","
      "   \"resources\": {\"requests\": {\"cpu\": \"64\"}}}]}}]}";
  char *out = NULL;
  CHECK_OK(kcore_scheduler_schedule(nodes, pods, &out));
  CHECK_CONTAINS(out, "{\"name\":\"heavy\",\"namespace\":\"prod\",\"node\":\"big\",\"reason\":null}");
  CHECK_CONTAINS(out, "{\"name\":\"wants-ssd\",\"namespace\":\"default\",\"node\":\"big\",\"reason\":null}");
  CHECK_CONTAINS(out, "\"name\":\"huge\",\"namespace\":\"prod\",\"node\":null,\"reason\":\"0/2 nodes are available");
  CHECK_CONTAINS(out, "Insufficient cpu");
  kcore_string_free(out);

  out = NULL;
  CHECK_RC(kcore_scheduler_schedule("{\"not\": \"a list\"}", "[]", &out),
           KCORE_INVALID_ARGUMENT);
  CHECK(out == NULL);
  CHECK_RC(kcore_scheduler_schedule("[{\"metadata\": {\"name\": \"n\"}, "
                                    "\"status\": {\"allocatable\": {\"cpu\": "
                                    "\"lots\"}}}]",
                                    "[]", &out),
           KCORE_SCHEDULER_ERROR);
  CHECK_CONTAINS(last_error(), "lots");
  CHECK_RC(kcore_scheduler_schedule("[", "[]", &out), KCORE_INVALID_ARGUMENT);
}

int main(void) {
  test_version_and_errors();
  test_route_table();
  test_service_table();
  test_scheduler();
  return check_finish("test_basic");
}
