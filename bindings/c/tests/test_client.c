/* The cluster client against a kcore API server started by run.sh: apply
 * (create, then update), get, list with a selector, delete, a watch on a
 * second thread seeing ADDED/MODIFIED/DELETED, and the error paths.
 * usage: test_client <kubeconfig> */
#include <pthread.h>
#include <stdint.h>

#include "check.h"

struct watch_state {
  const kcore_client *client;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started;   /* saw the pre-existing object */
  char log[4096]; /* "ADDED:name MODIFIED:name ..." */
  kcore_result rc;
};

static int on_event(const char *type, const char *object, void *user_data) {
  struct watch_state *w = (struct watch_state *)user_data;
  const char *name = strstr(object, "\"name\":\"");
  char nm[64] = "?";
  if (name) {
    name += 8;
    size_t n = strcspn(name, "\"");
    if (n >= sizeof nm) n = sizeof nm - 1;
    memcpy(nm, name, n);
    nm[n] = 0;
  }
  pthread_mutex_lock(&w->mu);
  size_t used = strlen(w->log);
  snprintf(w->log + used, sizeof w->log - used, "%s:%s ", type, nm);
  if (strcmp(nm, "before") == 0) w->started = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  /* Stop after the watched object is deleted. */
  return strcmp(type, "DELETED") == 0 && strcmp(nm, "w1") == 0;
}

static void *watcher(void *arg) {
  struct watch_state *w = (struct watch_state *)arg;
  w->rc = kcore_client_watch(w->client, "v1", "ConfigMap", "default", "watched=yes",
                             60000, on_event, w);
  pthread_mutex_lock(&w->mu);
  w->started = 1; /* wake the main thread even if the watch failed */
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static const char *MANIFEST =
    "apiVersion: v1\n"
    "kind: ConfigMap\n"
    "metadata:\n"
    "  name: c-settings\n"
    "  labels: {app: c-test}\n"
    "data: {mode: one}\n"
    "---\n"
    "apiVersion: v1\n"
    "kind: ConfigMap\n"
    "metadata:\n"
    "  name: c-other\n"
    "  labels: {app: other}\n";

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <kubeconfig>\n", argv[0]);
    return 2;
  }
  kcore_client *c = NULL;
  CHECK_OK(kcore_client_connect(argv[1], &c));
  if (!c) return check_finish("test_client");
  /* The server is shared by the shared, static and valgrind runs: start clean. */
  const char *names[] = {"c-settings", "c-other", "before", "w1"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    kcore_result rc = kcore_client_delete(c, "v1", "ConfigMap", "default", names[i]);
    CHECK(rc == KCORE_OK || rc == KCORE_NOT_FOUND);
  }

  /* apply creates ... */
  char *json = NULL;
  CHECK_OK(kcore_client_apply(c, MANIFEST, "c-test", false, &json));
  CHECK_CONTAINS(json, "\"name\":\"c-settings\"");
  CHECK_CONTAINS(json, "\"name\":\"c-other\"");
  CHECK_CONTAINS(json, "\"mode\":\"one\"");
  kcore_string_free(json);
  /* ... and updates. */
  const char *update =
      "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": "
      "{\"name\": \"c-settings\", \"labels\": {\"app\": \"c-test\"}}, "
      "\"data\": {\"mode\": \"two\"}}";
  CHECK_OK(kcore_client_apply(c, update, "c-test", false, &json));
  CHECK_CONTAINS(json, "\"mode\":\"two\"");
  kcore_string_free(json);

  CHECK_OK(kcore_client_get(c, "v1", "ConfigMap", NULL, "c-settings", &json));
  CHECK_CONTAINS(json, "\"mode\":\"two\"");
  CHECK_CONTAINS(json, "\"namespace\":\"default\"");
  kcore_string_free(json);

  CHECK_OK(kcore_client_list(c, "v1", "ConfigMap", "default", "app=c-test", &json));
  CHECK_CONTAINS(json, "c-settings");
  CHECK(json && strstr(json, "c-other") == NULL);
  kcore_string_free(json);
  CHECK_OK(kcore_client_list(c, "v1", "Namespace", NULL, NULL, &json));
  CHECK_CONTAINS(json, "\"kube-system\"");
  kcore_string_free(json);

  CHECK_OK(kcore_client_delete(c, "v1", "ConfigMap", NULL, "c-other"));
  json = (char *)"x";
  CHECK_RC(kcore_client_get(c, "v1", "ConfigMap", "default", "c-other", &json),
           KCORE_NOT_FOUND);
  CHECK(json == NULL);
  CHECK_CONTAINS(last_error(), "c-other");
  CHECK_RC(kcore_client_delete(c, "v1", "ConfigMap", NULL, "c-other"), KCORE_NOT_FOUND);

  /* Errors: a malformed second document, unknown kinds, conflicts. */
  CHECK_RC(kcore_client_apply(c,
                              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n"
                              "---\nkind: ConfigMap\nmetadata: {name: bad}\n",
                              "c-test", false, &json),
           KCORE_MANIFEST_ERROR);
  CHECK_CONTAINS(last_error(), "document 1");
  CHECK_CONTAINS(last_error(), "apiVersion");
  CHECK_RC(kcore_client_get(c, "example.com/v1", "Widget", NULL, "w", &json),
           KCORE_CLIENT_ERROR);
  CHECK_CONTAINS(last_error(), "Widget");
  const char *theirs =
      "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": "
      "{\"name\": \"c-settings\"}, \"data\": {\"mode\": \"three\"}}";
  CHECK_RC(kcore_client_apply(c, theirs, "someone-else", false, &json), KCORE_CONFLICT);
  CHECK_CONTAINS(last_error(), "c-settings");
  CHECK_OK(kcore_client_apply(c, theirs, "someone-else", true, &json));
  CHECK_CONTAINS(json, "\"mode\":\"three\"");
  kcore_string_free(json);
  kcore_client *bad = NULL;
  CHECK_RC(kcore_client_connect("/nonexistent/kubeconfig", &bad), KCORE_KUBECONFIG_ERROR);
  CHECK(bad == NULL);
  CHECK_RC(kcore_client_watch(c, "v1", "ConfigMap", NULL, NULL, 1, NULL, NULL),
           KCORE_NULL_PARAMETER);

  /* Watch on another thread while this one creates, updates and deletes. */
  CHECK_OK(kcore_client_apply(c,
                              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: before, "
                              "labels: {watched: 'yes'}}\n",
                              "c-test", false, &json));
  kcore_string_free(json);
  struct watch_state w;
  memset(&w, 0, sizeof w);
  w.client = c;
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, watcher, &w) == 0);
  pthread_mutex_lock(&w.mu);
  while (!w.started) pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);

  const char *w1 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w1, labels: "
                   "{watched: 'yes'}}\ndata: {k: '%s'}\n";
  char doc[512];
  snprintf(doc, sizeof doc, w1, "1");
  CHECK_OK(kcore_client_apply(c, doc, "c-test", false, &json));
  kcore_string_free(json);
  snprintf(doc, sizeof doc, w1, "2");
  CHECK_OK(kcore_client_apply(c, doc, "c-test", false, &json));
  kcore_string_free(json);
  CHECK_OK(kcore_client_delete(c, "v1", "ConfigMap", NULL, "w1"));
  pthread_join(th, NULL);
  CHECK_RC(w.rc, KCORE_OK);
  CHECK_STREQ(w.log, "ADDED:before ADDED:w1 MODIFIED:w1 DELETED:w1 ");

  /* A watch that ends on its timeout. */
  memset(w.log, 0, sizeof w.log);
  CHECK_OK(kcore_client_watch(c, "v1", "ConfigMap", "empty-ns", NULL, 200, on_event, &w));
  CHECK_STREQ(w.log, "");
  /* A watch on a kind the server does not serve fails before any event. */
  CHECK_RC(kcore_client_watch(c, "example.com/v1", "Widget", NULL, NULL, 100, on_event, &w),
           KCORE_CLIENT_ERROR);
  CHECK_CONTAINS(last_error(), "Widget");
  CHECK_STREQ(w.log, "");

  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
  kcore_client_free(c);
  return check_finish("test_client");
}
