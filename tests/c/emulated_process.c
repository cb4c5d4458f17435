// What tqlab/aarch64.py's emulated process must give a static musl program beyond what
// turbo_kernels.c asks for (tests/test_neon.py): the program break, large allocations
// (mmap) that grow (mremap) and shrink, MADV_DONTNEED's zeros, the auxiliary vector,
// stdout and stderr, a missing file, the exit status. Built with -DUNEMULATED it makes a
// system call the emulation lacks; with -DABORT it aborts.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "line %d: %s\n", __LINE__, #c); return 1; } } while (0)

int main(void) {
#if defined(UNEMULATED)
    syscall(424); // pidfd_send_signal
#elif defined(ABORT)
    abort();
#endif
    // the break as malloc implementations move it (musl's sbrk only reads it)
    char * b = (char *) syscall(SYS_brk, 0);
    CHECK((char *) syscall(SYS_brk, b + 3*4096 + 5) == b + 3*4096 + 5);
    memset(b, 7, 3*4096 + 5);
    CHECK((char *) syscall(SYS_brk, b + 4096) == b + 4096);
    CHECK((char *) syscall(SYS_brk, b + 3*4096) == b + 3*4096);
    CHECK(b[4095] == 7 && b[4096] == 0 && b[2*4096] == 0); // the pages it gave up come back zeroed
    CHECK((char *) syscall(SYS_brk, b - 4096) == b + 3*4096); // not below its start

    unsigned char * p = malloc(1 << 20);
    CHECK(p != NULL);
    for (int i = 0; i < 1 << 20; ++i) p[i] = (unsigned char) i;
    p = realloc(p, 8 << 20);
    CHECK(p != NULL);
    for (int i = 0; i < 1 << 20; ++i) CHECK(p[i] == (unsigned char) i);
    p[(8 << 20) - 1] = 1;
    p = realloc(p, 2 << 20);
    CHECK(p != NULL && p[12345] == (unsigned char) 12345);
    free(p);

    char * m = mmap(NULL, 2*4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    m[0] = m[4096] = 5;
    CHECK(madvise(m, 2*4096, MADV_DONTNEED) == 0);
    CHECK(m[0] == 0 && m[4096] == 0);
    CHECK(munmap(m, 2*4096) == 0);

    unsigned char r[32] = {0}, zero[32] = {0};
    CHECK(getrandom(r, sizeof(r), 0) == sizeof(r) && memcmp(r, zero, sizeof(r)) != 0);
    struct timespec t0, t1;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &t0) == 0 && clock_gettime(CLOCK_MONOTONIC, &t1) == 0);
    CHECK(t1.tv_sec > t0.tv_sec || (t1.tv_sec == t0.tv_sec && t1.tv_nsec >= t0.tv_nsec));
    CHECK(fopen("/nonexistent/file", "r") == NULL && errno == ENOENT);
    CHECK(getauxval(AT_PAGESZ) == 4096);

    printf("hwcap %#lx\n", getauxval(AT_HWCAP));
    fprintf(stderr, "to stderr\n");
    return 3;
}
