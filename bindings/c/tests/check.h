/* Assertion helpers for the libkcore C tests. */
#ifndef KCORE_TEST_CHECK_H
#define KCORE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcore.h"

static int check_failures = 0;

static const char *last_error(void) {
  static char buf[2048];
  kcore_last_error(buf, sizeof buf);
  return buf;
}

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__,      \
              #cond);                                                        \
      check_failures++;                                                      \
    }                                                                        \
  } while (0)

/* Asserts a call returns `want`; on mismatch prints the last error. */
#define CHECK_RC(call, want)                                                 \
  do {                                                                       \
    kcore_result rc_ = (call);                                               \
    if (rc_ != (kcore_result)(want)) {                                       \
      fprintf(stderr, "%s:%d: %s returned %u, want %s (%u): %s\n", __FILE__, \
              __LINE__, #call, (unsigned)rc_, #want, (unsigned)(want),       \
              last_error());                                                 \
      check_failures++;                                                      \
    }                                                                        \
  } while (0)

#define CHECK_OK(call) CHECK_RC(call, KCORE_OK)

/* Fails the test when `hay` does not contain `needle` (NULL-safe). */
#define CHECK_CONTAINS(hay, needle)                                          \
  do {                                                                       \
    const char *h_ = (hay);                                                  \
    if (h_ == NULL || strstr(h_, (needle)) == NULL) {                        \
      fprintf(stderr, "%s:%d: expected %s to contain \"%s\", got: %s\n",     \
              __FILE__, __LINE__, #hay, (needle), h_ ? h_ : "(null)");       \
      check_failures++;                                                      \
    }                                                                        \
  } while (0)

#define CHECK_STREQ(a, b)                                                    \
  do {                                                                       \
    const char *a_ = (a), *b_ = (b);                                         \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                   \
      fprintf(stderr, "%s:%d: %s = \"%s\", want \"%s\"\n", __FILE__,        \
              __LINE__, #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");         \
      check_failures++;                                                      \
    }                                                                        \
  } while (0)

static int check_finish(const char *name) {
  if (check_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, check_failures);
    return 1;
  }
  printf("%s: ok\n", name);
  return 0;
}

#endif
