/* The image store: import an OCI layout built by run.sh (two layers, one
 * gzip, one whiteout), list, inspect, unpack into a directory and into a
 * layer store with progress, remove, and the error paths.
 * Saves it as an OCI layout and a docker-archive (imported back).
 * With a registry address, also pulls the same image from it, and pushes it
 * under a new name and pulls that back.
 * usage: test_image <store-dir> <layout-dir> <work-dir> [<registry host:port>] */
#define _GNU_SOURCE /* syscall() */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "check.h"

struct progress {
  unsigned calls;
  uint64_t bytes, entries;
};

static void on_progress(uint64_t bytes, uint64_t entries, void *user_data) {
  struct progress *p = (struct progress *)user_data;
  /* Serialised enough for this test: calls come from one layer at a time. */
  __atomic_fetch_add(&p->calls, 1, __ATOMIC_SEQ_CST);
  if (bytes > p->bytes) p->bytes = bytes;
  if (entries > p->entries) p->entries = entries;
}

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  static char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

static int exists(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0;
}

/* kcore-image unpacks with openat2(2) (RESOLVE_BENEATH); valgrind 3.19 and
 * kernels before 5.6 do not have it, and the store then fails with ENOSYS. */
static int have_openat2(void) {
  uint64_t how[3] = {0, 0, 0}; /* struct open_how: flags, mode, resolve */
  long fd = syscall(437 /* SYS_openat2 */, AT_FDCWD, ".", how, sizeof how);
  if (fd >= 0) {
    close((int)fd);
    return 1;
  }
  return errno != ENOSYS;
}

/* Build events: how many steps started and how many came from the cache. */
struct events {
  int steps, cached;
};

static void on_event(const char *kind, const char *text, void *user_data) {
  struct events *e = (struct events *)user_data;
  if (strcmp(kind, "step") == 0 && text && text[0] == '[') e->steps++;
  if (strcmp(kind, "cached") == 0) e->cached++;
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: %s <store> <layout> <work> [registry]\n", argv[0]);
    return 2;
  }
  char path[4096], dest[2048];
  kcore_image_store *s = NULL;
  CHECK_OK(kcore_image_store_open(argv[1], &s));
  if (!s) return check_finish("test_image");

  char *json = NULL;
  CHECK_OK(kcore_image_store_import_layout(s, argv[2], "example.com/c-test:1", &json));
  CHECK_CONTAINS(json, "\"name\":\"example.com/c-test:1\"");
  CHECK_CONTAINS(json, "\"manifest\":\"sha256:");
  kcore_string_free(json);

  CHECK_OK(kcore_image_store_list(s, &json));
  CHECK_CONTAINS(json, "example.com/c-test:1");
  kcore_string_free(json);

  CHECK_OK(kcore_image_store_inspect(s, "example.com/c-test:1", &json));
  CHECK(count(json, "\"chain_id\"") == 2);
  CHECK_CONTAINS(json, "tar+gzip");
  CHECK_CONTAINS(json, "\"Cmd\":[\"/bin/sh\"]");
  kcore_string_free(json);

  if (!have_openat2()) {
    fprintf(stderr, "test_image: openat2(2) is unavailable here (valgrind <= 3.19?):"
                    " unpack checks skipped\n");
    goto errors;
  }

  /* Flatten into a new directory: the whiteout of layer 2 removes a file of
   * layer 1. */
  struct progress p = {0, 0, 0};
  snprintf(dest, sizeof dest, "%s/rootfs", argv[3]);
  CHECK_OK(kcore_image_store_unpack(s, "example.com/c-test:1", dest, on_progress, &p));
  snprintf(path, sizeof path, "%s/a/keep.txt", dest);
  CHECK_STREQ(read_file(path), "kept from layer one\n");
  snprintf(path, sizeof path, "%s/b/new.txt", dest);
  CHECK_STREQ(read_file(path), "added by layer two\n");
  snprintf(path, sizeof path, "%s/a/gone.txt", dest);
  CHECK(!exists(path));
  snprintf(path, sizeof path, "%s/a/.wh.gone.txt", dest);
  CHECK(!exists(path));
  CHECK(p.calls > 0);
  CHECK(p.bytes > 0 && p.entries >= 5);

  /* The destination must not exist. */
  CHECK_RC(kcore_image_store_unpack(s, "example.com/c-test:1", dest, NULL, NULL),
           KCORE_IMAGE_ERROR);
  CHECK_CONTAINS(last_error(), "rootfs");

  /* Into an overlay layer store: one diff directory per layer. */
  snprintf(path, sizeof path, "%s/layers", argv[3]);
  struct progress q = {0, 0, 0};
  CHECK_OK(kcore_image_store_unpack_layers(s, "example.com/c-test:1", path, 2,
                                           on_progress, &q, &json));
  CHECK_CONTAINS(json, "\"unpacked\":2");
  CHECK_CONTAINS(json, "\"top\":\"");
  kcore_string_free(json);
  CHECK(q.calls > 0);
  CHECK_OK(kcore_image_store_unpack_layers(s, "example.com/c-test:1", path, 0,
                                           NULL, NULL, &json));
  CHECK_CONTAINS(json, "\"unpacked\":0"); /* reused */
  kcore_string_free(json);

  /* A Dockerfile build on the imported image: config instructions only, so no
   * container runs and no root is needed. */
  char dockerfile[2048], layers[2048];
  snprintf(dockerfile, sizeof dockerfile, "%s/Dockerfile", argv[3]);
  snprintf(layers, sizeof layers, "%s/layers", argv[3]);
  write_file(dockerfile,
             "FROM example.com/c-test:1\n"
             "ARG MODE=dev\n"
             "ENV APP_MODE=${MODE}\n"
             "LABEL org.example.built-by=c\n"
             "CMD [\"/bin/sh\", \"-c\", \"echo built\"]\n");
  struct events ev = {0, 0};
  CHECK_OK(kcore_image_store_build(s, dockerfile, argv[3], layers,
                                   "{\"tag\": \"example.com/c-built:1\","
                                   " \"build_args\": {\"MODE\": \"prod\"}}",
                                   on_event, &ev, &json));
  CHECK_CONTAINS(json, "\"name\":\"example.com/c-built:1\"");
  CHECK_CONTAINS(json, "\"layers_built\":0");
  kcore_string_free(json);
  CHECK(ev.steps == 5);
  CHECK_OK(kcore_image_store_inspect(s, "example.com/c-built:1", &json));
  CHECK_CONTAINS(json, "APP_MODE=prod");
  CHECK_CONTAINS(json, "org.example.built-by");
  CHECK_CONTAINS(json, "echo built");
  CHECK(count(json, "\"chain_id\"") == 2); /* the base's layers, no new one */
  kcore_string_free(json);
  /* A syntax error names its line. */
  write_file(dockerfile, "FROM example.com/c-test:1\nCOPY\n");
  json = (char *)"x";
  CHECK_RC(kcore_image_store_build(s, dockerfile, argv[3], layers, NULL, NULL, NULL, &json),
           KCORE_INVALID_ARGUMENT);
  CHECK(json == NULL);
  CHECK_CONTAINS(last_error(), "Dockerfile:2");
  CHECK_OK(kcore_image_store_remove(s, "example.com/c-built:1"));

errors:
  /* Error paths. */
  json = (char *)"x";
  snprintf(dest, sizeof dest, "%s/never", argv[3]);
  CHECK_RC(kcore_image_store_unpack(s, "no/such:image", dest, NULL, NULL), KCORE_NOT_FOUND);
  CHECK_CONTAINS(last_error(), "no/such:image");
  CHECK_RC(kcore_image_store_inspect(s, "no/such:image", &json), KCORE_NOT_FOUND);
  CHECK(json == NULL);
  CHECK_RC(kcore_image_store_import_layout(s, "/nonexistent/layout", NULL, &json),
           KCORE_IMAGE_ERROR);
  CHECK_CONTAINS(last_error(), "/nonexistent/layout");
  CHECK_RC(kcore_image_store_import_archive(s, argv[2], NULL, &json), KCORE_IMAGE_ERROR);
  CHECK_CONTAINS(last_error(), "manifest.json");
  CHECK_RC(kcore_image_store_pull(s, "127.0.0.1:1/nothing:1",
                                  "{\"plain_http\": true, \"attempts\": 1}",
                                  NULL, NULL, &json),
           KCORE_IMAGE_ERROR);
  CHECK_RC(kcore_image_store_pull(s, "busybox", "{\"bogus\": 1}", NULL, NULL, &json),
           KCORE_INVALID_ARGUMENT);
  CHECK_CONTAINS(last_error(), "bogus");
  CHECK_RC(kcore_image_store_pull(s, "UPPER CASE!", NULL, NULL, NULL, &json),
           KCORE_INVALID_ARGUMENT);

  if (argc == 5) {
    /* Pull the same image from the registry: same config (skopeo may
     * re-serialise the manifest). */
    char ref[512], *imported = NULL;
    snprintf(ref, sizeof ref, "%s/c-test:1", argv[4]);
    CHECK_OK(kcore_image_store_inspect(s, "example.com/c-test:1", &imported));
    struct progress pp = {0, 0, 0};
    CHECK_OK(kcore_image_store_pull(s, ref, "{\"plain_http\": true, \"attempts\": 2}",
                                    on_progress, &pp, &json));
    CHECK_CONTAINS(json, ref);
    const char *m = json ? strstr(json, "\"config\":\"sha256:") : NULL;
    CHECK(m != NULL);
    if (m && imported) {
      char digest[128];
      snprintf(digest, sizeof digest, "%.*s", 71, m + 10); /* "sha256:<64 hex>" */
      CHECK_CONTAINS(imported, digest);
    }
    kcore_string_free(json);
    kcore_string_free(imported);
    CHECK(pp.calls > 0 && pp.bytes > 0);
    CHECK_OK(kcore_image_store_remove(s, ref));
  }

  /* Save: an OCI layout directory, and a docker-archive that imports back
   * with the same config. */
  {
    char *imported = NULL, *back = NULL, cfg[128] = "";
    CHECK_OK(kcore_image_store_inspect(s, "example.com/c-test:1", &imported));
    const char *m = imported ? strstr(imported, "\"config\":\"sha256:") : NULL;
    CHECK(m != NULL);
    if (m) snprintf(cfg, sizeof cfg, "%.*s", 71, m + 10);
    const char *names[] = {"example.com/c-test:1"};
    snprintf(path, sizeof path, "%s/saved-oci/", argv[3]);
    CHECK_OK(kcore_image_store_save(s, names, 1, path, NULL));
    snprintf(path, sizeof path, "%s/saved-oci/oci-layout", argv[3]);
    CHECK(exists(path));
    snprintf(path, sizeof path, "%s/saved-oci/index.json", argv[3]);
    CHECK_CONTAINS(read_file(path), "example.com/c-test:1");
    snprintf(path, sizeof path, "%s/saved-docker.tar", argv[3]);
    CHECK_OK(kcore_image_store_save(s, names, 1, path, "docker-archive"));
    CHECK_OK(kcore_image_store_import_archive(s, path, "example.com/c-saved:1", &json));
    CHECK_CONTAINS(json, "example.com/c-saved:1");
    kcore_string_free(json);
    CHECK_OK(kcore_image_store_inspect(s, "example.com/c-saved:1", &back));
    CHECK_CONTAINS(back, cfg);
    kcore_string_free(back);
    kcore_string_free(imported);
    CHECK_OK(kcore_image_store_remove(s, "example.com/c-saved:1"));
    /* the error paths */
    CHECK_RC(kcore_image_store_save(s, names, 1, path, "zip"), KCORE_INVALID_ARGUMENT);
    CHECK_CONTAINS(last_error(), "zip");
    CHECK_RC(kcore_image_store_save(s, names, 0, path, NULL), KCORE_INVALID_ARGUMENT);
    CHECK_RC(kcore_image_store_save(s, NULL, 1, path, NULL), KCORE_NULL_PARAMETER);
    const char *missing[] = {"no/such:image"};
    CHECK_RC(kcore_image_store_save(s, missing, 1, path, NULL), KCORE_NOT_FOUND);
    CHECK_CONTAINS(last_error(), "no/such:image");
  }

  if (argc == 5) {
    /* Push to the registry under a new name, then pull it back: same config. */
    char ref[512], *imported = NULL;
    /* a repository of its own per run: each flavour pushes to the same registry */
    snprintf(ref, sizeof ref, "%s/c-pushed-%ld:1", argv[4], (long)getpid());
    CHECK_OK(kcore_image_store_inspect(s, "example.com/c-test:1", &imported));
    struct progress pp = {0, 0, 0};
    CHECK_OK(kcore_image_store_push(s, "example.com/c-test:1", ref,
                                    "{\"plain_http\": true, \"attempts\": 2, \"chunk_size\": 64}",
                                    on_progress, &pp, &json));
    CHECK_CONTAINS(json, "\"reference\":\"");
    CHECK_CONTAINS(json, ref);
    CHECK_CONTAINS(json, "\"uploaded\":3");
    CHECK_CONTAINS(json, "\"digest\":\"sha256:");
    kcore_string_free(json);
    CHECK(pp.calls > 0 && pp.bytes > 0);
    /* again: every blob is there already */
    CHECK_OK(kcore_image_store_push(s, "example.com/c-test:1", ref, "{\"plain_http\": true}",
                                    NULL, NULL, &json));
    CHECK_CONTAINS(json, "\"existing\":3");
    kcore_string_free(json);
    CHECK_OK(kcore_image_store_pull(s, ref, "{\"plain_http\": true}", NULL, NULL, &json));
    const char *m = json ? strstr(json, "\"config\":\"sha256:") : NULL;
    CHECK(m != NULL);
    if (m && imported) {
      char digest[128];
      snprintf(digest, sizeof digest, "%.*s", 71, m + 10);
      CHECK_CONTAINS(imported, digest);
    }
    kcore_string_free(json);
    kcore_string_free(imported);
    CHECK_OK(kcore_image_store_remove(s, ref));
    CHECK_RC(kcore_image_store_push(s, "example.com/c-test:1", ref, "{\"username\": \"u\"}",
                                    NULL, NULL, &json),
             KCORE_INVALID_ARGUMENT);
    CHECK(json == NULL);
    CHECK_RC(kcore_image_store_push(s, "no/such:image", ref, NULL, NULL, NULL, &json),
             KCORE_NOT_FOUND);
  }

  CHECK_OK(kcore_image_store_remove(s, "example.com/c-test:1"));
  CHECK_OK(kcore_image_store_list(s, &json));
  CHECK_STREQ(json, "[]");
  kcore_string_free(json);
  CHECK_RC(kcore_image_store_remove(s, "example.com/c-test:1"), KCORE_NOT_FOUND);

  kcore_image_store_free(s);
  return check_finish("test_image");
}
