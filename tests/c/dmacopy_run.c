/* dmacopy driven from user space under `vfiosim run --machine x86` (docs/dmacopy.md):
 * Type1 v2 mappings of a descriptor ring, a completion record and two 1 MiB buffers; MSI-X
 * vector 0 on an eventfd; registers through pread/pwrite of the device fd's BAR0 region.
 *
 *   dmacopy_run check            correctness: copies (1 MiB, odd sizes, a batch of four),
 *                                status words, HEAD, COMPLETED, the completion record, one
 *                                MSI per descriptor, a read-only destination that faults
 *   dmacopy_run bench N M FILE   timing: N 1 MiB copies and M 64-byte copies; writes one
 *                                line per copy to FILE: "big|small t0 t1 t2" (CLOCK_MONOTONIC
 *                                ns: before the TAIL pwrite, after it, poll() woke up), and
 *                                "pvm ns" lines: a native process_vm_readv + writev of 1 MiB
 *                                (the floor a supervisor-side copy can reach)
 * Exit status 0 when every check passes; each failure is printed. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", \
    __FILE__, __LINE__, #c, errno, strerror(errno)); failures++; } } while (0)
#define DIE(c) do { if (!(c)) { fprintf(stderr, "FATAL %s:%d: %s (errno %d %s)\n", \
    __FILE__, __LINE__, #c, errno, strerror(errno)); exit(10); } } while (0)

#define BDF "0000:02:00.0"
#define MIB (1u << 20)
#define RING_SIZE 64
/* registers (docs/dmacopy.md section 2) */
#define R_ID 0x000
#define R_CTRL 0x008
#define R_STATUS 0x00C
#define R_RING_LO 0x010
#define R_RING_HI 0x014
#define R_RING_SIZE 0x018
#define R_TAIL 0x020
#define R_HEAD 0x024
#define R_COMPL_LO 0x028
#define R_COMPL_HI 0x02C
#define R_COMPLETED 0x030
#define DESC_INT 0x1
#define DONE 0x1u
/* bus addresses */
#define RING_IOVA 0x1000000ull
#define A_IOVA 0x2000000ull
#define B_IOVA 0x4000000ull
#define RO_IOVA 0x6000000ull

struct desc { uint64_t src, dst; uint32_t len; uint16_t flags, vector; uint32_t status, bytes; };

static int container, group, device, efd;
static uint64_t bar0, cfg;
static struct desc *ring;
static uint32_t *compl_rec;
static uint8_t *a, *b, *ro;
static unsigned tail;

static uint64_t now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ull + t.tv_nsec;
}

static uint32_t rd(uint32_t reg) {
    uint32_t v = 0;
    DIE(pread(device, &v, 4, bar0 + reg) == 4);
    return v;
}

static void wr(uint32_t reg, uint32_t v) { DIE(pwrite(device, &v, 4, bar0 + reg) == 4); }

static void *buffer(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    DIE(p != MAP_FAILED);
    memset(p, 0, size);
    return p;
}

static void map(void *vaddr, uint64_t iova, uint64_t size, uint32_t flags) {
    struct vfio_iommu_type1_dma_map m = { .argsz = sizeof m, .flags = flags,
        .vaddr = (uintptr_t)vaddr, .iova = iova, .size = size };
    DIE(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == 0);
}

static void setup(void) {
    char l[256] = { 0 };
    DIE(readlink("/sys/bus/pci/devices/" BDF "/iommu_group", l, sizeof l - 1) > 0);
    char p[64];
    snprintf(p, sizeof p, "/dev/vfio/%d", atoi(strrchr(l, '/') + 1));
    container = open("/dev/vfio/vfio", O_RDWR);
    DIE(container >= 0);
    DIE(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1);
    group = open(p, O_RDWR);
    DIE(group >= 0);
    DIE(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0);
    DIE(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) == 0);
    device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, BDF);
    DIE(device >= 0);
    struct vfio_region_info ri = { .argsz = sizeof ri, .index = VFIO_PCI_BAR0_REGION_INDEX };
    DIE(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri) == 0 && ri.size == 0x4000);
    bar0 = ri.offset;
    ri.index = VFIO_PCI_CONFIG_REGION_INDEX;
    DIE(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri) == 0);
    cfg = ri.offset;
    uint16_t cmd;
    DIE(pread(device, &cmd, 2, cfg + 4) == 2);
    cmd |= 0x6; /* memory space, bus master */
    DIE(pwrite(device, &cmd, 2, cfg + 4) == 2);
    struct vfio_irq_info ii = { .argsz = sizeof ii, .index = VFIO_PCI_MSIX_IRQ_INDEX };
    DIE(ioctl(device, VFIO_DEVICE_GET_IRQ_INFO, &ii) == 0 && ii.count == 8);
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    DIE(efd >= 0);
    char sb[sizeof(struct vfio_irq_set) + 4];
    struct vfio_irq_set *s = (void *)sb;
    *s = (struct vfio_irq_set){ .argsz = sizeof sb, .flags = VFIO_IRQ_SET_DATA_EVENTFD |
        VFIO_IRQ_SET_ACTION_TRIGGER, .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 1 };
    memcpy(s->data, &efd, 4);
    DIE(ioctl(device, VFIO_DEVICE_SET_IRQS, s) == 0);

    ring = buffer(4096);
    compl_rec = (uint32_t *)((char *)ring + RING_SIZE * sizeof(struct desc));
    a = buffer(MIB);
    b = buffer(MIB);
    ro = buffer(4096);
    map(ring, RING_IOVA, 4096, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
    map(a, A_IOVA, MIB, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
    map(b, B_IOVA, MIB, VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE);
    map(ro, RO_IOVA, 4096, VFIO_DMA_MAP_FLAG_READ);

    DIE(rd(R_ID) == 0x444D4143);
    wr(R_RING_LO, (uint32_t)RING_IOVA);
    wr(R_RING_HI, (uint32_t)(RING_IOVA >> 32));
    wr(R_RING_SIZE, RING_SIZE);
    uint64_t compl_iova = RING_IOVA + RING_SIZE * sizeof(struct desc);
    wr(R_COMPL_LO, (uint32_t)compl_iova);
    wr(R_COMPL_HI, (uint32_t)(compl_iova >> 32));
    wr(R_CTRL, 1); /* ENABLE */
}

/* Queue one descriptor (not yet rung). */
static struct desc *queue(uint64_t src, uint64_t dst, uint32_t len, int irq) {
    struct desc *d = &ring[tail];
    *d = (struct desc){ .src = src, .dst = dst, .len = len, .flags = irq ? DESC_INT : 0,
                        .vector = 0 };
    tail = (tail + 1) % RING_SIZE;
    return d;
}

/* Wait for n MSIs on vector 0; returns the time poll() woke up. */
static uint64_t wait_msi(unsigned n) {
    uint64_t got = 0, t = 0;
    while (got < n) {
        struct pollfd pf = { efd, POLLIN, 0 };
        int r = poll(&pf, 1, 10000);
        t = now();
        DIE(r == 1);
        uint64_t v;
        DIE(read(efd, &v, 8) == 8);
        got += v;
    }
    CHECK(got == n);
    return t;
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) { x = x * 1103515245u + 12345u; p[i] = x >> 24; }
}

static int check(void) {
    uint32_t completed0 = rd(R_COMPLETED);
    /* one 1 MiB copy */
    fill(a, MIB, 1);
    memset(b, 0, MIB);
    struct desc *d = queue(A_IOVA, B_IOVA, MIB, 1);
    wr(R_TAIL, tail);
    wait_msi(1);
    CHECK(memcmp(a, b, MIB) == 0);
    CHECK(d->status == DONE && d->bytes == MIB);
    CHECK(rd(R_HEAD) == tail);
    CHECK(rd(R_COMPLETED) == completed0 + 1);
    CHECK(compl_rec[0] == tail && compl_rec[1] == completed0 + 1);
    /* a batch of four odd-sized copies, one doorbell, interrupts on two of them */
    fill(a, MIB, 2);
    memset(b, 0, MIB);
    static const uint32_t off[4] = { 0, 4097, 300000, 777777 };
    static const uint32_t len[4] = { 1, 4095, 123457, MIB - 777777 };
    struct desc *ds[4];
    for (int i = 0; i < 4; i++)
        ds[i] = queue(A_IOVA + off[i], B_IOVA + off[i], len[i], i == 1 || i == 3);
    wr(R_TAIL, tail);
    wait_msi(2);
    for (int i = 0; i < 4; i++) {
        CHECK(ds[i]->status == DONE && ds[i]->bytes == len[i]);
        CHECK(memcmp(a + off[i], b + off[i], len[i]) == 0);
    }
    CHECK(b[1] == 0 && b[4097 + 4095] == 0); /* nothing outside the ranges */
    CHECK(rd(R_COMPLETED) == completed0 + 5);
    /* a copy into a read-only mapping faults: nothing moves, the status says why, the
     * completion interrupt still comes (docs/dmacopy.md section 3) */
    memset(ro, 0x5A, 4096);
    d = queue(A_IOVA, RO_IOVA, 4096, 1);
    wr(R_TAIL, tail);
    wait_msi(1);
    CHECK(d->status == (0x80000000u | 0x04) && d->bytes == 0);
    CHECK(ro[0] == 0x5A && ro[4095] == 0x5A);
    CHECK((rd(R_STATUS) & 0x2) == 0); /* a descriptor error does not halt the engine */
    /* and the engine goes on */
    fill(a, MIB, 3);
    d = queue(A_IOVA, B_IOVA, MIB, 1);
    wr(R_TAIL, tail);
    wait_msi(1);
    CHECK(d->status == DONE && memcmp(a, b, MIB) == 0);
    if (failures) return 1;
    printf("dmacopy: ok\n");
    return 0;
}

static int cmp64(const void *x, const void *y) {
    uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;
    return p < q ? -1 : p > q;
}

static int bench(int n, int m, const char *path) {
    FILE *f = fopen(path, "w");
    DIE(f != NULL);
    uint8_t *bounce = buffer(MIB);
    uint64_t *pvm = calloc(n, 8);
    DIE(pvm != NULL);
    for (int i = 0; i < n; i++) {
        struct iovec l = { bounce, MIB }, ra = { a, MIB }, rb = { b, MIB };
        uint64_t t0 = now();
        DIE(process_vm_readv(getpid(), &l, 1, &ra, 1, 0) == MIB);
        DIE(process_vm_writev(getpid(), &l, 1, &rb, 1, 0) == MIB);
        pvm[i] = now() - t0;
    }
    qsort(pvm, n, 8, cmp64);
    fprintf(f, "pvm %llu\n", (unsigned long long)pvm[n / 2]);
    for (int i = 0; i < n; i++) {
        fill(a, 4096, i);
        a[MIB - 1] = i;
        struct desc *d = queue(A_IOVA, B_IOVA, MIB, 1);
        uint64_t t0 = now();
        wr(R_TAIL, tail);
        uint64_t t1 = now();
        uint64_t t2 = wait_msi(1);
        fprintf(f, "big %llu %llu %llu\n", (unsigned long long)t0, (unsigned long long)t1,
                (unsigned long long)t2);
        CHECK(d->status == DONE && memcmp(a, b, 4096) == 0 && b[MIB - 1] == (uint8_t)i);
    }
    for (int i = 0; i < m; i++) {
        struct desc *d = queue(A_IOVA, B_IOVA, 64, 1);
        uint64_t t0 = now();
        wr(R_TAIL, tail);
        uint64_t t1 = now();
        uint64_t t2 = wait_msi(1);
        fprintf(f, "small %llu %llu %llu\n", (unsigned long long)t0, (unsigned long long)t1,
                (unsigned long long)t2);
        CHECK(d->status == DONE);
    }
    fclose(f);
    return failures != 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "check";
    setup();
    if (!strcmp(mode, "check")) return check();
    if (!strcmp(mode, "bench") && argc > 4) return bench(atoi(argv[2]), atoi(argv[3]), argv[4]);
    fprintf(stderr, "usage: dmacopy_run check | bench N M FILE\n");
    return 2;
}
