/* VFIO conformance client for `vfiosim run` (real vfiosim model).
 *   vfio_client pamu     the seed's flow on p4080 (SPEC 6.9): PAMU windows, edu DMA, MSI
 *   vfio_client type1    Type1 v2 basics on x86: GET_INFO, MAP/UNMAP_DMA, edu DMA, MSI
 *   vfio_client setirqs  SET_IRQS validation on x86 edu (SPEC 11.5 checklist)
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
#include <unistd.h>
#include "vfio_pamu.h"

static int failures;
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: %s (errno %d %s)\n", \
    __FILE__, __LINE__, #c, errno, strerror(errno)); failures++; } } while (0)

static int container, group, device;
static uint64_t bar0, cfg;

static int group_of(const char *bdf) {
    char p[256], l[256] = { 0 };
    snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/iommu_group", bdf);
    if (readlink(p, l, sizeof l - 1) < 0) { perror(p); exit(10); }
    return atoi(strrchr(l, '/') + 1);
}

static void setup(int iommu_type) {
    container = open("/dev/vfio/vfio", O_RDWR);
    CHECK(container >= 0);
    CHECK(ioctl(container, VFIO_GET_API_VERSION) == VFIO_API_VERSION);
    CHECK(ioctl(container, VFIO_CHECK_EXTENSION, iommu_type) == 1);
    char p[64];
    snprintf(p, sizeof p, "/dev/vfio/%d", group_of("0000:01:00.0"));
    group = open(p, O_RDWR);
    CHECK(group >= 0);
    struct vfio_group_status st = { .argsz = sizeof st };
    CHECK(ioctl(group, VFIO_GROUP_GET_STATUS, &st) == 0 && (st.flags & VFIO_GROUP_FLAGS_VIABLE));
    CHECK(ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0") == -1 && errno == EINVAL);
    CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0);
    CHECK(ioctl(container, VFIO_SET_IOMMU, iommu_type) == 0);
}

static void open_device(void) {
    device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0");
    CHECK(device >= 0);
    struct vfio_device_info di = { .argsz = sizeof di };
    CHECK(ioctl(device, VFIO_DEVICE_GET_INFO, &di) == 0 && (di.flags & VFIO_DEVICE_FLAGS_PCI));
    struct vfio_region_info ri = { .argsz = sizeof ri, .index = VFIO_PCI_BAR0_REGION_INDEX };
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri) == 0 && ri.size == 1 << 20);
    bar0 = ri.offset;
    ri.index = VFIO_PCI_CONFIG_REGION_INDEX;
    CHECK(ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &ri) == 0);
    cfg = ri.offset;
    uint16_t cmd = 0;
    CHECK(pread(device, &cmd, 2, cfg + 4) == 2);
    cmd |= 0x6;  /* memory + bus master */
    CHECK(pwrite(device, &cmd, 2, cfg + 4) == 2);
    uint32_t id = 0;
    CHECK(pread(device, &id, 4, bar0) == 4 && id == 0x010000ed);
}

static uint32_t rd32(uint64_t off) { uint32_t v = 0; CHECK(pread(device, &v, 4, bar0 + off) == 4); return v; }
static void wr32(uint64_t off, uint32_t v) { CHECK(pwrite(device, &v, 4, bar0 + off) == 4); }
static void wr64(uint64_t off, uint64_t v) { CHECK(pwrite(device, &v, 8, bar0 + off) == 8); }

static int msi_eventfd(void) {
    int e = eventfd(0, EFD_NONBLOCK);
    char buf[sizeof(struct vfio_irq_set) + 4];
    struct vfio_irq_set *s = (void *)buf;
    s->argsz = sizeof buf;
    s->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    s->index = VFIO_PCI_MSI_IRQ_INDEX;
    s->start = 0;
    s->count = 1;
    memcpy(s->data, &e, 4);
    CHECK(ioctl(device, VFIO_DEVICE_SET_IRQS, s) == 0);
    return e;
}

static int wait_irq(int e, int ms) {
    struct pollfd p = { e, POLLIN, 0 };
    if (poll(&p, 1, ms) != 1) return 0;
    uint64_t v;
    return read(e, &v, 8) == 8 ? (int)v : 0;
}

/* edu DMA of n bytes between iova and the device buffer, completion signalled by MSI */
static void edu_dma_roundtrip(int e, uint64_t iova, char *buf) {
    memset(buf, 0, 8192);
    strcpy(buf, "hello through the IOMMU");
    wr64(0x80, iova);
    wr64(0x88, 0x40000);
    wr64(0x90, 64);
    wr64(0x98, 0x1 | 0x4);          /* RAM -> edu, raise DMA_IRQ */
    CHECK(wait_irq(e, 3000) >= 1);
    CHECK((rd32(0x24) & 0x100) == 0x100);
    wr32(0x64, 0x100);
    wr64(0x80, 0x40000);
    wr64(0x88, iova + 4096);
    wr64(0x90, 64);
    wr64(0x98, 0x1 | 0x2 | 0x4);    /* edu -> RAM */
    CHECK(wait_irq(e, 3000) >= 1);
    CHECK(!strcmp(buf + 4096, "hello through the IOMMU"));
    wr32(0x64, 0x100);
    /* MSI through the raise register */
    wr32(0x60, 0x1);
    CHECK(wait_irq(e, 1000) >= 1);
    wr32(0x64, 0x1);
}

static int pamu(void) {
    setup(VFIO_FSL_PAMU_IOMMU);
    CHECK(ioctl(container, VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT) == 3);
    struct vfio_pamu_attr a = { .argsz = sizeof a, .attribute = VFIO_ATTR_GEOMETRY };
    a.attr_info.attr.aperture_start = 0;
    a.attr_info.attr.aperture_end = 0x01ffffff;
    CHECK(ioctl(container, VFIO_IOMMU_PAMU_SET_ATTR, &a) == 0);
    memset(&a, 0, sizeof a);
    a.argsz = sizeof a;
    a.attribute = VFIO_ATTR_WINDOWS;
    a.attr_info.windows = 16;
    CHECK(ioctl(container, VFIO_IOMMU_PAMU_SET_ATTR, &a) == 0);
    open_device();
    int e = eventfd(0, EFD_NONBLOCK);
    {   /* before any mapping the bank has no window: ENODEV (SPEC 6.9) */
        char buf[sizeof(struct vfio_irq_set) + 4];
        struct vfio_irq_set *s = (void *)buf;
        *s = (struct vfio_irq_set){ .argsz = sizeof buf, .index = VFIO_PCI_MSI_IRQ_INDEX,
            .flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, .count = 1 };
        memcpy(s->data, &e, 4);
        CHECK(ioctl(device, VFIO_DEVICE_SET_IRQS, s) == -1 && errno == ENODEV);
    }
    close(e);
    char *buf = mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (buf == MAP_FAILED) { perror("mmap hugetlb"); return 11; }
    memset(buf, 0, 4 << 20);
    struct vfio_iommu_type1_dma_map m = { .argsz = sizeof m, .flags = VFIO_DMA_MAP_FLAG_READ |
        VFIO_DMA_MAP_FLAG_WRITE, .vaddr = (uintptr_t)buf, .iova = 0, .size = 4 << 20 };
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == 0);
    m.iova = 0x01a00000;
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == -1 && errno == EINVAL);
    m.iova = 0x00200000;
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == -1 && errno == EBUSY);
    e = msi_eventfd();
    edu_dma_roundtrip(e, 0, buf);
    struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof u, .iova = 0, .size = 4 << 20 };
    CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u) == 0 && u.size == 4 << 20);
    return failures ? 1 : 0;
}

static int type1(void) {
    setup(VFIO_TYPE1v2_IOMMU);
    struct vfio_iommu_type1_info info = { .argsz = sizeof info };
    CHECK(ioctl(container, VFIO_IOMMU_GET_INFO, &info) == 0);
    CHECK(info.iova_pgsizes == 0x40201000);
    open_device();
    char *buf = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct vfio_iommu_type1_dma_map m = { .argsz = sizeof m, .flags = VFIO_DMA_MAP_FLAG_READ |
        VFIO_DMA_MAP_FLAG_WRITE, .vaddr = (uintptr_t)buf, .iova = 0x100000, .size = 1 << 20 };
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == 0);
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == -1 && errno == EEXIST);
    m.argsz = 8;
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == -1 && errno == EINVAL);
    m.argsz = sizeof m;
    m.vaddr = 4096;    /* not mapped in this process: pinning fails */
    m.iova = 0x400000;
    CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m) == -1 && errno == EFAULT);
    int e = msi_eventfd();
    edu_dma_roundtrip(e, 0x100000, buf);
    struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof u, .iova = 0x100000, .size = 1 << 20 };
    CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u) == 0 && u.size == 1 << 20);
    return failures ? 1 : 0;
}

static int set_irqs(int index, uint32_t flags, uint32_t start, uint32_t count, uint32_t argsz,
                    const void *data, size_t n) {
    char buf[64] = { 0 };
    struct vfio_irq_set *s = (void *)buf;
    s->argsz = argsz;
    s->flags = flags;
    s->index = index;
    s->start = start;
    s->count = count;
    if (n) memcpy(s->data, data, n);
    return ioctl(device, VFIO_DEVICE_SET_IRQS, s);
}

static int setirqs(void) {
    setup(VFIO_TYPE1v2_IOMMU);
    open_device();
    const int MSI = VFIO_PCI_MSI_IRQ_INDEX, T = VFIO_IRQ_SET_ACTION_TRIGGER;
    const int NONE = VFIO_IRQ_SET_DATA_NONE, BOOL = VFIO_IRQ_SET_DATA_BOOL;
    const int EV = VFIO_IRQ_SET_DATA_EVENTFD;
    int e = eventfd(0, EFD_NONBLOCK), p[2];
    CHECK(pipe(p) == 0);
    int bad = 999;
    uint8_t one = 1, zero = 0;
    CHECK(set_irqs(MSI, T | NONE, 0, 1, 3, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(5, T | NONE, 0, 1, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, 0x40 | T | NONE, 0, 1, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, VFIO_IRQ_SET_ACTION_MASK | NONE | BOOL, 0, 1, 21, &one, 1) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, T | NONE, 0, 2, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, T | NONE, 1, 0, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, T | NONE, 1, 0xffffffff, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, T | BOOL, 0, 1, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(MSI, T | EV, 0, 1, 20, NULL, 0) == -1 && errno == EINVAL);
    CHECK(set_irqs(VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | NONE,
                   0, 1, 20, NULL, 0) == -1 && errno == ENOTTY);
    CHECK(set_irqs(MSI, VFIO_IRQ_SET_ACTION_MASK | NONE, 0, 1, 20, NULL, 0) == -1 && errno == ENOTTY);
    CHECK(set_irqs(MSI, T | NONE, 0, 1, 20, NULL, 0) == -1 && errno == EINVAL);  /* not enabled */
    CHECK(set_irqs(MSI, T | EV, 0, 1, 24, &p[0], 4) == -1 && errno == EINVAL);     /* a pipe */
    CHECK(set_irqs(MSI, T | EV, 0, 1, 24, &bad, 4) == -1 && errno == EBADF);       /* not open */
    CHECK(set_irqs(MSI, T | EV, 0, 1, 24, &e, 4) == 0);
    CHECK(set_irqs(MSI, T | NONE, 0, 1, 20, NULL, 0) == 0);
    CHECK(wait_irq(e, 1000) == 1);
    CHECK(set_irqs(MSI, T | BOOL, 0, 1, 23, &zero, 1) == 0);
    CHECK(set_irqs(MSI, T | BOOL, 0, 1, 21, &one, 1) == 0);
    CHECK(wait_irq(e, 1000) == 1);
    CHECK(set_irqs(MSI, T | BOOL, 0, 0, 20, NULL, 0) == 0);
    CHECK(set_irqs(MSI, T | NONE, 0, 0, 20, NULL, 0) == 0);                       /* disable */
    CHECK(set_irqs(VFIO_PCI_REQ_IRQ_INDEX, T | NONE, 0, 0, 20, NULL, 0) == -1 && errno == EINVAL);
    return failures ? 1 : 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "type1";
    int rc;
    if (!strcmp(mode, "pamu")) rc = pamu();
    else if (!strcmp(mode, "type1")) rc = type1();
    else if (!strcmp(mode, "setirqs")) rc = setirqs();
    else { fprintf(stderr, "unknown mode %s\n", mode); return 2; }
    printf("%s: %s\n", mode, rc ? "FAILED" : "ok");
    return rc;
}
