/* Plumbing checks for `vfiosim run`, run against the fake model of
 * tests/test_run_fakemodel.py (real VFIO ioctls GET_API_VERSION / CHECK_EXTENSION, plus the
 * fake's private ones 0x3bf0..0x3bf5).  Usage: run_plumbing MODE [ARGS]; exit 0 = pass. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define FAKE_COUNT 0x3bf0
#define FAKE_BUG 0x3bf1
#define FAKE_INOUT 0x3bf2
#define FAKE_EVENTFD 0x3bf3
#define FAKE_DMA 0x3bf4
#define FAKE_SLOW 0x3bf5

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", \
    __FILE__, __LINE__, #c, errno, strerror(errno)); failures++; } } while (0)

static int open_container(void) {
    int fd = open("/dev/vfio/vfio", O_RDWR);
    if (fd < 0) { perror("open /dev/vfio/vfio"); exit(10); }
    return fd;
}

static int container;
static void *thread_main(void *p) {
    long bad = 0;
    for (int i = 0; i < 5000; i++)
        if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) bad++;
    return (void *)bad;
}

static void on_alarm(int sig) { (void)sig; }

static int device_fd(int *groupp) {
    int g = open("/dev/vfio/1", O_RDWR);
    CHECK(g >= 900 && g <= 999);
    int d = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0");
    CHECK(d >= 900 && d <= 999);
    if (groupp) *groupp = g;
    return d;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "basic";
    if (!strcmp(mode, "true")) return 0;
    if (!strcmp(mode, "exit")) return atoi(argv[2]);
    if (!strcmp(mode, "basic")) {
        int c = open_container();
        CHECK(c >= 900 && c <= 999);
        CHECK(ioctl(c, VFIO_GET_API_VERSION) == VFIO_API_VERSION);
        CHECK(ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) == 1);
        struct { uint32_t argsz, v; } s = { 8, 41 };
        CHECK(ioctl(c, FAKE_INOUT, &s) == 0 && s.v == 42);
        s.argsz = 4;
        CHECK(ioctl(c, FAKE_INOUT, &s) == -1 && errno == EINVAL);
        CHECK(ioctl(c, FAKE_INOUT, (void *)16) == -1 && errno == EFAULT);
        CHECK(ioctl(c, 0x3bff) == -1 && errno == ENOTTY);
        int p[2];
        CHECK(pipe(p) == 0);
        int n = -1;
        CHECK(ioctl(p[0], FIONREAD, &n) == 0 && n == 0);   /* ordinary fds untouched */
        CHECK(open("/dev/vfio/7", O_RDWR) == -1 && errno == ENOENT);
        /* raw system calls and glibc-internal opens are served too */
        long rc = syscall(SYS_openat, AT_FDCWD, "/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        CHECK(rc >= 900);
        CHECK(syscall(SYS_ioctl, (int)rc, VFIO_GET_API_VERSION, 0) == 0);
        CHECK((fcntl((int)rc, F_GETFD) & FD_CLOEXEC) == FD_CLOEXEC);
        CHECK(syscall(SYS_open, "/dev/../dev/vfio/vfio", O_RDWR) >= 900);
        CHECK(chdir("/dev") == 0);
        CHECK(open("vfio/vfio", O_RDWR) >= 900);
        FILE *f = fopen("/dev/vfio/vfio", "r");
        CHECK(f != NULL && ioctl(fileno(f), VFIO_GET_API_VERSION) == 0);
        CHECK(close(c) == 0);
        CHECK(ioctl(c, VFIO_GET_API_VERSION) == -1 && errno == EBADF);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "threads")) {
        container = open_container();
        pthread_t t[8];
        for (int i = 0; i < 8; i++) pthread_create(&t[i], NULL, thread_main, NULL);
        long bad = 0;
        for (int i = 0; i < 8; i++) { void *r; pthread_join(t[i], &r); bad += (long)r; }
        printf("threads: %ld bad of 40000\n", bad);
        return bad ? 1 : 0;
    }
    if (!strcmp(mode, "storm")) {
        /* 20 us interval timer; every counted ioctl must take effect exactly once */
        int n = argc > 2 ? atoi(argv[2]) : 20000;
        int c = open_container();
        struct sigaction sa = { 0 };
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = { { 0, 20 }, { 0, 20 } };
        setitimer(ITIMER_REAL, &it, NULL);
        int ok = 0, eintr = 0;
        for (int i = 0; i < n; i++) {
            int r = ioctl(c, FAKE_COUNT);
            if (r == 0) ok++;
            else if (errno == EINTR) eintr++;
            else { perror("ioctl"); return 1; }
        }
        struct itimerval off = { 0 };
        setitimer(ITIMER_REAL, &off, NULL);
        printf("storm: ok %d eintr %d\n", ok, eintr);
        FILE *f = fopen(argv[3], "w");
        fprintf(f, "%d\n", ok);
        fclose(f);
        return 0;
    }
    if (!strcmp(mode, "slow")) {     /* pid to argv[2], then a slow ioctl (killed there) */
        int c = open_container();
        FILE *f = fopen(argv[2], "w");
        fprintf(f, "%d\n", getpid());
        fclose(f);
        for (;;) ioctl(c, FAKE_SLOW);
    }
    if (!strcmp(mode, "bug")) {      /* a supervisor-side exception becomes EIO */
        int c = open_container();
        CHECK(ioctl(c, FAKE_BUG) == -1 && errno == EIO);
        CHECK(ioctl(c, VFIO_GET_API_VERSION) == 0);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "fork")) {
        int c = open_container();
        int g;
        int d = device_fd(&g);
        pid_t pid = fork();
        if (pid == 0) {
            int bad = 0;
            for (int i = 0; i < 100; i++) bad += ioctl(c, VFIO_GET_API_VERSION) != 0;
            char b[4] = { 0 };
            bad += pread(d, b, 4, 0) != 4 || memcmp(b, "PRNT", 4);
            bad += pwrite(d, "CHLD", 4, 8) != 4;
            _exit(bad ? 3 : 0);
        }
        CHECK(pwrite(d, "PRNT", 4, 0) == 4 || 1);
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char b[4];
        CHECK(pread(d, b, 4, 8) == 4 && !memcmp(b, "CHLD", 4));
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "forks")) {    /* 20 short-lived children, then one parent call */
        int c = open_container();
        for (int i = 0; i < 20; i++) {
            pid_t pid = fork();
            if (pid == 0) _exit(ioctl(c, VFIO_GET_API_VERSION) == VFIO_API_VERSION ? 0 : 3);
            int st;
            waitpid(pid, &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        CHECK(ioctl(c, FAKE_COUNT) == 0);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "release")) {
        int g;
        int d = device_fd(&g);
        CHECK(close(g) == 0);
        CHECK(open("/dev/vfio/1", O_RDWR) == -1 && errno == EBUSY);  /* device holds it */
        int d2 = dup(d);
        CHECK(d2 >= 900 && d2 <= 999);
        CHECK(close(d) == 0);
        CHECK(open("/dev/vfio/1", O_RDWR) == -1 && errno == EBUSY);  /* the dup holds it */
        CHECK(close(d2) == 0);
        int g2 = open("/dev/vfio/1", O_RDWR);                        /* released */
        CHECK(g2 >= 900);
        /* a forked child keeps the group open after the parent closes it */
        pid_t pid = fork();
        if (pid == 0) { usleep(200000); _exit(0); }
        CHECK(close(g2) == 0);
        CHECK(open("/dev/vfio/1", O_RDWR) == -1 && errno == EBUSY);
        waitpid(pid, NULL, 0);
        CHECK(open("/dev/vfio/1", O_RDWR) >= 900);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "device")) {
        int d = device_fd(NULL);
        CHECK(pwrite(d, "abcdefgh", 8, 16) == 8);
        char b[16] = { 0 };
        CHECK(pread(d, b, 8, 16) == 8 && !memcmp(b, "abcdefgh", 8));
        CHECK(lseek(d, 16, SEEK_SET) == 16);
        CHECK(read(d, b, 4) == 4 && !memcmp(b, "abcd", 4));
        CHECK(read(d, b, 4) == 4 && !memcmp(b, "efgh", 4));
        CHECK(lseek(d, 0, SEEK_CUR) == 24);
        char x[3] = { 0 }, y[5] = { 0 };
        struct iovec iov[2] = { { x, 3 }, { y, 5 } };
        CHECK(preadv(d, iov, 2, 16) == 8 && !memcmp(x, "abc", 3) && !memcmp(y, "defgh", 5));
        char *volatile bad = (char *)16;
        CHECK(pread(d, bad, 8, 16) == -1 && errno == EFAULT);
        /* eventfd passed to the model, signalled by the supervisor, seen by poll() */
        int e = eventfd(0, EFD_NONBLOCK);
        struct { uint32_t argsz; int32_t fd; } s = { 8, e };
        CHECK(ioctl(d, FAKE_EVENTFD, &s) == 0);
        struct pollfd pfd = { e, POLLIN, 0 };
        CHECK(poll(&pfd, 1, 1000) == 1);
        uint64_t v = 0;
        CHECK(read(e, &v, 8) == 8 && v == 1);
        s.fd = 0;  /* not an eventfd */
        CHECK(ioctl(d, FAKE_EVENTFD, &s) == -1 && errno == EINVAL);
        s.fd = 777;
        CHECK(ioctl(d, FAKE_EVENTFD, &s) == -1 && errno == EBADF);
        /* device "DMA" into our memory, and protection honoured */
        char *buf = malloc(64);
        memset(buf, 0, 64);
        CHECK(ioctl(d, FAKE_DMA, buf) == 0 && !strcmp(buf, "DMA-OK!"));
        CHECK(ioctl(d, FAKE_DMA, (void *)main) == -1 && errno == EFAULT);
        /* dup family keeps model fds in the window */
        int d3 = fcntl(d, F_DUPFD_CLOEXEC, 0);
        CHECK(d3 >= 900 && (fcntl(d3, F_GETFD) & FD_CLOEXEC));
        CHECK(pread(d3, b, 4, 16) == 4);
        CHECK(dup2(d, 950) == 950 && pread(950, b, 4, 16) == 4);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "paths")) {
        struct stat st;
        CHECK(stat("/dev/vfio/vfio", &st) == 0 && S_ISCHR(st.st_mode));
        CHECK(stat("/dev/vfio/1", &st) == 0 && S_ISCHR(st.st_mode));
        CHECK(access("/dev/vfio/1", R_OK | W_OK) == 0);
        char l[256] = { 0 };
        CHECK(readlink("/sys/bus/pci/devices/0000:01:00.0/iommu_group", l, 255) > 0);
        CHECK(!strcmp(strrchr(l, '/'), "/1"));
        CHECK(stat("/sys/kernel/iommu_groups/1/devices/0000:01:00.0/vendor", &st) == 0);
        FILE *f = fopen("/sys/bus/pci/devices/0000:01:00.0/vendor", "r");
        char v[16] = { 0 };
        CHECK(f && fgets(v, sizeof v, f) && !strcmp(v, "0x1234\n"));
        int c = open("/sys/bus/pci/devices/0000:01:00.0/config", O_RDONLY);
        uint16_t id[2] = { 0 };
        CHECK(c >= 900 && pread(c, id, 4, 0) == 4 && id[0] == 0x1234 && id[1] == 0x11e8);
        CHECK(open("/sys/kernel/debug/iommu/intel/dmar_translation_struct", O_RDONLY) == -1
              && errno == ENOENT);
        int cf = open_container();
        CHECK(fstat(cf, &st) == 0 && S_ISCHR(st.st_mode));
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "exec")) {     /* non-CLOEXEC fds survive execve */
        int c = open_container();
        int cx = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", c);
        snprintf(b, sizeof b, "%d", cx);
        execl("/proc/self/exe", argv[0], "exec2", a, b, (char *)NULL);
        return 9;
    }
    if (!strcmp(mode, "exec2")) {
        int c = atoi(argv[2]), cx = atoi(argv[3]);
        CHECK(ioctl(c, VFIO_GET_API_VERSION) == 0);
        CHECK(fcntl(cx, F_GETFD) == -1 && errno == EBADF);
        return failures ? 1 : 0;
    }
    if (!strcmp(mode, "system")) {   /* a shell and a grandchild opening the model */
        char cmd[512];
        snprintf(cmd, sizeof cmd, "%s basic && grep -q 0x11e8 "
                 "/sys/bus/pci/devices/0000:01:00.0/device", argv[2]);
        int st = system(cmd);
        CHECK(st == 0);
        return failures ? 1 : 0;
    }
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
