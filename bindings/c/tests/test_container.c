/* Containers (root only): a busybox bundle built by run.sh; create from a
 * spec given as JSON and from the bundle's config.json, start, state, kill,
 * wait, delete.
 * usage: test_container <state-root> <bundle> */
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

static const char *SPEC_FMT =
    "{\"ociVersion\": \"1.0.2\","
    " \"process\": {\"terminal\": false, \"user\": {\"uid\": 0, \"gid\": 0},"
    "   \"args\": %s, \"env\": [\"PATH=/bin\"], \"cwd\": \"/\"},"
    " \"root\": {\"path\": \"rootfs\", \"readonly\": true},"
    " \"hostname\": \"kcore-c\","
    " \"mounts\": [{\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"}],"
    " \"linux\": {\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"mount\"},"
    "   {\"type\": \"uts\"}, {\"type\": \"ipc\"}]}}";

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s <state-root> <bundle>\n", argv[0]);
    return 2;
  }
  char spec[2048], id1[64], id2[64], path[4096];
  snprintf(id1, sizeof id1, "kcore-c-exit-%d", (int)getpid());
  snprintf(id2, sizeof id2, "kcore-c-kill-%d", (int)getpid());

  kcore_runtime *rt = NULL;
  CHECK_OK(kcore_runtime_new(argv[1], &rt));
  if (!rt) return check_finish("test_container");

  /* 1. From a spec JSON: the program's exit code comes back from wait. */
  snprintf(spec, sizeof spec, SPEC_FMT,
           "[\"/bin/sh\", \"-c\", \"test \\\"$(hostname)\\\" = kcore-c && exit 3\"]");
  kcore_container *c = NULL;
  CHECK_OK(kcore_container_create(rt, id1, argv[2], spec, &c));
  if (c) {
    char *state = NULL;
    CHECK_OK(kcore_container_state(c, &state));
    CHECK_CONTAINS(state, "\"status\":\"created\"");
    CHECK_CONTAINS(state, id1);
    kcore_string_free(state);
    char *id = NULL;
    CHECK_OK(kcore_container_id(c, &id));
    CHECK_STREQ(id, id1);
    kcore_string_free(id);

    /* The id is taken now. */
    kcore_container *dup = NULL;
    CHECK_RC(kcore_container_create(rt, id1, argv[2], spec, &dup), KCORE_CONFLICT);
    CHECK(dup == NULL);

    char *ids = NULL;
    CHECK_OK(kcore_runtime_list(rt, &ids));
    CHECK_CONTAINS(ids, id1);
    kcore_string_free(ids);

    CHECK_OK(kcore_container_start(c));
    int code = -2, sig = -2;
    CHECK_OK(kcore_container_wait(c, &code, &sig));
    CHECK(code == 3);
    CHECK(sig == 0);
    CHECK_OK(kcore_container_state(c, &state));
    CHECK_CONTAINS(state, "\"status\":\"stopped\"");
    kcore_string_free(state);
    CHECK_OK(kcore_container_delete(c, false));
    /* Deleted: the handle answers NOT_FOUND until freed. */
    CHECK_RC(kcore_container_start(c), KCORE_NOT_FOUND);
    kcore_container_free(c);
  }
  kcore_container *gone = NULL;
  CHECK_RC(kcore_container_load(rt, id1, &gone), KCORE_NOT_FOUND);

  /* 2. From the bundle's config.json: kill a sleeping program. */
  snprintf(spec, sizeof spec, SPEC_FMT, "[\"/bin/sleep\", \"300\"]");
  snprintf(path, sizeof path, "%s/config.json", argv[2]);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) {
    fputs(spec, f);
    fclose(f);
  }
  c = NULL;
  CHECK_OK(kcore_container_create(rt, id2, argv[2], NULL, &c));
  if (c) {
    CHECK_OK(kcore_container_start(c));
    int pid = 0;
    CHECK_OK(kcore_container_pid(c, &pid));
    CHECK(pid > 1);
    char *state = NULL;
    CHECK_OK(kcore_container_state(c, &state));
    CHECK_CONTAINS(state, "\"status\":\"running\"");
    kcore_string_free(state);
    /* A second handle on the same container, by id. */
    kcore_container *again = NULL;
    CHECK_OK(kcore_container_load(rt, id2, &again));
    CHECK_OK(kcore_container_kill(again, SIGKILL, false));
    kcore_container_free(again);
    int code = -2, sig = -2;
    CHECK_OK(kcore_container_wait(c, &code, &sig));
    CHECK(sig == SIGKILL);
    CHECK(code == -1);
    CHECK_OK(kcore_container_delete(c, false));
    kcore_container_free(c);
  }
  char *ids = NULL;
  CHECK_OK(kcore_runtime_list(rt, &ids));
  CHECK_STREQ(ids, "[]");
  kcore_string_free(ids);

  /* Bad input. */
  c = NULL;
  CHECK_RC(kcore_container_create(rt, "bad/id", argv[2], spec, &c), KCORE_INVALID_ARGUMENT);
  CHECK_RC(kcore_container_create(rt, id1, argv[2], "{\"ociVersion\": 1}", &c),
           KCORE_INVALID_ARGUMENT);
  CHECK(c == NULL);
  kcore_runtime_free(rt);
  return check_finish("test_container");
}
