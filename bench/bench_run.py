"""Benchmarks of `vfiosim run` (seccomp user notification); prints one JSON object.

Figures (median over separately timed calls, x86 preset):
  get_api_version_us   emulated VFIO_GET_API_VERSION              (target <= 8 us)
  map_dma_us           emulated Type1 MAP_DMA of 4 KiB (UNMAP between, untimed)
  unserved_overhead_ns ioctl(FIONREAD) on a pipe, under run minus native (target <= 100 ns)
  startup_overhead_ms  `vfiosim run -- /bin/true` minus native /bin/true (target <= 150 ms)
  dma_copy_ratio       1 MiB copy inside PROG through the supervisor's DMA path
                       (RemoteMemory.copy: process_vm_readv + writev) vs a bare
                       process_vm_readv + writev of the same size (target >= 0.5)
  msi_latency_us       edu raise-register pwrite (emulated) -> MSI -> PROG's poll() wake-up
                       (target <= 30 us)
Usage: python bench/bench_run.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

C_SRC = r"""
#define _GNU_SOURCE
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
#include <time.h>
#include <unistd.h>
static uint64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ull + t.tv_nsec; }
static int cmp(const void *a, const void *b) { uint64_t x = *(uint64_t *)a, y = *(uint64_t *)b;
    return x < y ? -1 : x > y; }
static uint64_t med(uint64_t *v, int n) { qsort(v, n, 8, cmp); return v[n / 2]; }
#define N 10000
static uint64_t t[N];
int main(int argc, char **argv) {
    if (!strcmp(argv[1], "native")) {
        int p[2]; pipe(p); int n;
        for (int i = 0; i < N; i++) {
        uint64_t a = now(); ioctl(p[0], FIONREAD, &n); t[i] = now() - a; }
        printf("{\"fionread_ns\": %llu}\n", (unsigned long long)med(t, N));
        return 0;
    }
    int c = open("/dev/vfio/vfio", O_RDWR);
    int p[2]; pipe(p); int n;
    for (int i = 0; i < N; i++) {
        uint64_t a = now(); ioctl(p[0], FIONREAD, &n); t[i] = now() - a; }
    uint64_t fion = med(t, N);
    for (int i = 0; i < N; i++) {
        uint64_t a = now(); ioctl(c, VFIO_GET_API_VERSION); t[i] = now() - a; }
    uint64_t api = med(t, N);
    int g = open("/dev/vfio/1", O_RDWR);
    ioctl(g, VFIO_GROUP_SET_CONTAINER, &c);
    ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
    char *buf = mmap(NULL, 1 << 21, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(buf, 1, 1 << 21);
    struct vfio_iommu_type1_dma_map m = { .argsz = sizeof m, .flags = 3,
        .vaddr = (uintptr_t)buf, .iova = 0x100000, .size = 4096 };
    struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof u, .iova = 0x100000, .size = 4096 };
    int nm = 2000;
    for (int i = 0; i < nm; i++) {
        uint64_t a = now();
        if (ioctl(c, VFIO_IOMMU_MAP_DMA, &m)) { perror("map"); return 1; }
        t[i] = now() - a;
        u.size = 4096; ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);
    }
    uint64_t map = med(t, nm);
    int d = ioctl(g, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0");
    struct vfio_region_info ri = { .argsz = sizeof ri, .index = VFIO_PCI_CONFIG_REGION_INDEX };
    ioctl(d, VFIO_DEVICE_GET_REGION_INFO, &ri);
    uint16_t cmd; pread(d, &cmd, 2, ri.offset + 4); cmd |= 6; pwrite(d, &cmd, 2, ri.offset + 4);
    ri.index = 0; ioctl(d, VFIO_DEVICE_GET_REGION_INFO, &ri);
    int e = eventfd(0, EFD_NONBLOCK);
    char sb[sizeof(struct vfio_irq_set) + 4];
    struct vfio_irq_set *s = (void *)sb;
    *s = (struct vfio_irq_set){ .argsz = sizeof sb, .flags = VFIO_IRQ_SET_DATA_EVENTFD |
        VFIO_IRQ_SET_ACTION_TRIGGER, .index = VFIO_PCI_MSI_IRQ_INDEX, .count = 1 };
    memcpy(s->data, &e, 4);
    ioctl(d, VFIO_DEVICE_SET_IRQS, s);
    int ni = 2000;
    for (int i = 0; i < ni; i++) {
        uint32_t one = 1; uint64_t v;
        struct pollfd pf = { e, POLLIN, 0 };
        uint64_t a = now();
        pwrite(d, &one, 4, ri.offset + 0x60);
        poll(&pf, 1, 1000);
        t[i] = now() - a;
        read(e, &v, 8);
        pwrite(d, &one, 4, ri.offset + 0x64);
    }
    uint64_t msi = med(t, ni);
    printf("{\"fionread_ns\": %llu, \"api_ns\": %llu, \"map_ns\": %llu, \"msi_ns\": %llu, "
           "\"buf\": %llu, \"pid\": %d}\n", (unsigned long long)fion, (unsigned long long)api,
           (unsigned long long)map, (unsigned long long)msi,
           (unsigned long long)(uintptr_t)buf, getpid());
    fflush(stdout);
    if (argc > 2) {  /* stay alive for the DMA copy measurement */
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dprintf(fd, "%llu %d\n", (unsigned long long)(uintptr_t)buf, getpid()); close(fd);
        sleep(30);
    }
    return 0;
}
"""


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "src"))
    tmp = tempfile.mkdtemp(prefix="vfiosim-bench-")
    src = os.path.join(tmp, "b.c")
    exe = os.path.join(tmp, "b")
    with open(src, "w") as f:
        f.write(C_SRC)
    subprocess.run(["gcc", "-O2", "-o", exe, src], check=True)
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src"))
    native = json.loads(subprocess.run([exe, "native"], capture_output=True, text=True,
                                       check=True).stdout)
    out = subprocess.run([sys.executable, "-m", "vfiosim", "run", "--machine", "x86", "--",
                          exe, "run"], capture_output=True, text=True, env=env, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])

    def wall(cmd: list[str]) -> float:
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    t_native = wall(["/bin/true"])
    t_run = wall([sys.executable, "-m", "vfiosim", "run", "--", "/bin/true"])
    t_py = wall([sys.executable, "-c", "import vfiosim.supervisor, vfiosim.api"])

    # DMA path: a supervisor-side copy of 1 MiB inside PROG's memory, run in-process
    from vfiosim.kernel.uaccess import process_vm_read, process_vm_write
    from vfiosim.supervisor.remote import RemoteMemory

    size = 1 << 20
    child = subprocess.Popen(["python3", "-c", "import mmap,time,sys;"
                              "m=mmap.mmap(-1, 4<<20);m.write(b'x'*(4<<20));"
                              "import ctypes;a=ctypes.addressof(ctypes.c_char.from_buffer(m));"
                              "print(a,flush=True);time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    base = int(child.stdout.readline())
    mm = RemoteMemory(child.pid)
    reps = 50

    def timed(fn) -> float:  # noqa: ANN001
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    t_model = timed(lambda: mm.copy(base + 2 * size, base, size))
    t_raw = timed(lambda: process_vm_write(child.pid, base + 2 * size,
                                           process_vm_read(child.pid, base, size)))
    child.kill()
    child.wait()
    res = {
        "get_api_version_us": round(r["api_ns"] / 1000, 2),
        "map_dma_us": round(r["map_ns"] / 1000, 2),
        "unserved_overhead_ns": int(r["fionread_ns"]) - int(native["fionread_ns"]),
        "fionread_native_ns": native["fionread_ns"],
        "fionread_under_run_ns": r["fionread_ns"],
        "startup_overhead_ms": round((t_run - t_native) * 1000, 1),
        "startup_python_import_ms": round(t_py * 1000, 1),
        "dma_copy_1MiB_GBps": round(size / t_model / 1e9, 2),
        "dma_copy_ratio": round(t_raw / t_model, 2),
        "msi_latency_us": round(r["msi_ns"] / 1000, 2),
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
