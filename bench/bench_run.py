"""Benchmarks of `vfiosim run` (seccomp user notification); prints one JSON object.

Figures (x86 preset; "median" = median over separately timed operations; figures measured in
several runs report the median of the runs' medians and every run's value):

  get_api_version_us    emulated VFIO_GET_API_VERSION round trip seen by PROG: ioctl() entry
                        to return, under `python -m vfiosim run` (target <= 8 us), with the
                        loop `loop` names ("c": the _fastpath accelerator is built)
  get_api_version_python_loop_us   the same with VFIOSIM_FASTPATH=0 (the pure-Python loop)
  seccomp_floor_c_us    the same round trip answered by a minimal C supervisor (RECV, SEND):
                        what any supervisor pays on this VM at that moment
  unserved_overhead_ns  ioctl(FIONREAD) on a pipe under run minus native (target <= 100 ns)
  startup_overhead_ms   wall time of `vfiosim run -- /bin/true` minus `/bin/true`, median of
                        20 (target <= 150 ms); reported twice: as this environment runs it
                        (PYTHONDONTWRITEBYTECODE=1 and no __pycache__: every run compiles the
                        sources) and with a bytecode cache (a private PYTHONPYCACHEPREFIX,
                        filled by one warm-up run), which is what an installed vfiosim has
  msi_latency_us        dmacopy raises MSI-X vector 0 (the model's raise_msi() call, on the
                        machine clock, timestamped CLOCK_MONOTONIC in the supervisor) -> PROG's
                        poll() on the vector's eventfd returns (CLOCK_MONOTONIC in PROG); 64-byte
                        descriptors, no emulated pwrite inside the interval (target <= 30 us)
  dmacopy_ratio         native process_vm_readv + process_vm_writev of 1 MiB (C, in PROG, one
                        iovec each: the floor of a supervisor-side copy) divided by the 1 MiB
                        dmacopy end to end time: PROG's TAIL pwrite (doorbell) -> PROG's poll()
                        wake-up on the completion MSI; the device is programmed by
                        tests/c/dmacopy_run.c through Type1 mappings (target >= 0.5)
  dmacopy_copy_us       the in-model part: DmaCopy.dma_copy() of the 1 MiB descriptor (IOMMU
                        translation + PhysBus.copy + the supervisor's process_vm copy)

The dmacopy and MSI figures run the supervisor in this process (run_main with a kernel whose
dmacopy function has timestamping wrappers around raise_msi and dma_copy: ~1 us each); the
others run the CLI.  Usage: python bench/bench_run.py [--quick]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

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
    uint64_t api = med(t, N), api90 = t[N * 9 / 10];
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
    printf("{\"fionread_ns\": %llu, \"api_ns\": %llu, \"api_p90_ns\": %llu, "
           "\"map_ns\": %llu, \"msi_ns\": %llu}\n", (unsigned long long)fion,
           (unsigned long long)api, (unsigned long long)api90, (unsigned long long)map,
           (unsigned long long)msi);
    return 0;
}
"""


# The floor: the same GET_API_VERSION round trip answered by a minimal C supervisor (no
# model, no Python): RECV, SEND {id, 0, 0, 0}, RECV...  Same pinning and SYNC_WAKE_UP as
# `vfiosim run`.  Prints {"api_ns": median}.
C_FLOOR_SRC = r"""
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/vfio.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP 1
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#define N 10000
#define FD 950
#define DONE 0x3bff
static uint64_t now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ull + t.tv_nsec; }
static int cmp(const void *a, const void *b) { uint64_t x = *(uint64_t *)a, y = *(uint64_t *)b;
    return x < y ? -1 : x > y; }
static uint64_t t[N];
int main(void) {
    cpu_set_t cpus; CPU_ZERO(&cpus); CPU_SET(sched_getcpu(), &cpus);
    sched_setaffinity(0, sizeof cpus, &cpus);
    int sp[2]; socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    pid_t pid = fork();
    if (pid == 0) {  /* the client: ioctl on fd 950 is notified, everything else allowed */
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, FD, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
        struct sock_fprog prog = { 6, f };
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        int l = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER,
                        SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        if (l < 0 || write(sp[0], &l, sizeof l) != sizeof l) _exit(1);
        char c; if (read(sp[0], &c, 1) != 1) _exit(1);  /* the supervisor has the listener */
        for (int i = 0; i < 1000; i++) ioctl(FD, VFIO_GET_API_VERSION);
        for (int i = 0; i < N; i++) {
            uint64_t a = now();
            if (ioctl(FD, VFIO_GET_API_VERSION) != 0) _exit(1);
            t[i] = now() - a;
        }
        ioctl(FD, DONE);
        qsort(t, N, 8, cmp);
        printf("{\"api_ns\": %llu}\n", (unsigned long long)t[N / 2]);
        fflush(stdout);
        _exit(0);
    }
    int l; if (read(sp[1], &l, sizeof l) != sizeof l) return 1;
    char path[64]; snprintf(path, sizeof path, "/proc/%d/fd/%d", pid, l);
    int pidfd = syscall(SYS_pidfd_open, pid, 0);
    l = syscall(SYS_pidfd_getfd, pidfd, l, 0);
    if (l < 0) { perror("pidfd_getfd"); return 1; }
    ioctl(l, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP);
    if (write(sp[1], "x", 1) != 1) return 1;
    struct seccomp_notif n; struct seccomp_notif_resp r;
    for (;;) {
        memset(&n, 0, sizeof n);
        if (ioctl(l, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0) break;
        r = (struct seccomp_notif_resp){ .id = n.id };
        ioctl(l, SECCOMP_IOCTL_NOTIF_SEND, &r);
        if (n.data.args[1] == DONE) break;
    }
    int st; waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}
"""


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _build(src: str, exe: str) -> None:
    subprocess.run(["gcc", "-O2", "-o", exe, src], check=True)


def cli_figures(exe: str, floor_exe: str, env: dict[str, str], runs: int) -> dict[str, Any]:
    """Rounds of: the C floor, `run` with the C loop, `run` with the Python loop
    (VFIOSIM_FASTPATH=0) -- interleaved, because this VM's speed drifts by 1.5x within
    minutes and a figure is only comparable to the floor measured next to it."""
    native = json.loads(subprocess.run([exe, "native"], capture_output=True, text=True,
                                       check=True).stdout)
    rs, py, floor = [], [], []
    for _ in range(runs):
        out = subprocess.run([floor_exe], capture_output=True, text=True, check=True).stdout
        floor.append(json.loads(out)["api_ns"] / 1000)
        for loop_env, dest in ((env, rs), (dict(env, VFIOSIM_FASTPATH="0"), py)):
            out = subprocess.run([sys.executable, "-m", "vfiosim", "run", "--machine", "x86",
                                  "--", exe, "run"], capture_output=True, text=True,
                                 env=loop_env, check=True).stdout
            dest.append(json.loads(out.strip().splitlines()[-1]))
    api = [r["api_ns"] / 1000 for r in rs]
    api_py = [r["api_ns"] / 1000 for r in py]
    fion = [int(r["fionread_ns"]) for r in rs]
    return {
        "loop": "c" if _fastpath_built(env) else "python",
        "get_api_version_us": round(_median(api), 2),
        "get_api_version_us_runs": [round(x, 2) for x in api],
        "get_api_version_p90_us": round(_median([r["api_p90_ns"] / 1000 for r in rs]), 2),
        "get_api_version_python_loop_us": round(_median(api_py), 2),
        "get_api_version_python_loop_us_runs": [round(x, 2) for x in api_py],
        "seccomp_floor_c_us": round(_median(floor), 2),
        "seccomp_floor_c_us_runs": [round(x, 2) for x in floor],
        "unserved_overhead_ns": int(_median(fion)) - int(native["fionread_ns"]),
        "fionread_native_ns": native["fionread_ns"],
        "fionread_under_run_ns": int(_median(fion)),
        "map_dma_us": round(_median([r["map_ns"] / 1000 for r in rs]), 2),
        "map_dma_python_loop_us": round(_median([r["map_ns"] / 1000 for r in py]), 2),
        "edu_pwrite_raise_to_poll_us": round(_median([r["msi_ns"] / 1000 for r in rs]), 2),
    }


def _fastpath_built(env: dict[str, str]) -> bool:
    code = "import vfiosim.supervisor.loop as m; print(m._fastpath is not None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    return out.strip() == "True"


def startup_figures(env: dict[str, str], n: int) -> dict[str, Any]:
    def wall(cmd: list[str], e: dict[str, str]) -> float:
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            subprocess.run(cmd, env=e, check=True)
            ts.append(time.perf_counter() - t0)
        return _median(ts) * 1000

    run_true = [sys.executable, "-m", "vfiosim", "run", "--", "/bin/true"]
    t_native = wall(["/bin/true"], env)
    t_python = wall([sys.executable, "-c", "pass"], env)
    t_run = wall(run_true, env)
    cache = tempfile.mkdtemp(prefix="vfiosim-bench-pyc-")
    try:
        warm = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        warm["PYTHONPYCACHEPREFIX"] = cache
        subprocess.run(run_true, env=warm, check=True)
        cached = dict(env, PYTHONPYCACHEPREFIX=cache)
        t_run_cached = wall(run_true, cached)
        t_import_cached = wall([sys.executable, "-c", "import vfiosim.cli, vfiosim.supervisor, "
                                "vfiosim.supervisor.loop, vfiosim.api"], cached)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "startup_overhead_ms": round(t_run - t_native, 1),
        "startup_overhead_bytecode_cached_ms": round(t_run_cached - t_native, 1),
        "startup_python_bare_ms": round(t_python, 1),
        "startup_imports_cached_ms": round(t_import_cached - t_python, 1),
        "startup_env_dont_write_bytecode": env.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def dmacopy_figures(prog: str, n_big: int, n_small: int) -> dict[str, Any]:
    """Run tests/c/dmacopy_run.c bench under the supervisor in this process."""
    sys.path.insert(0, SRC)
    from vfiosim.supervisor import load_kernel, run_main

    k = load_kernel("x86")
    hw = next(d.hw for d in k.machine.devices if d.name == "0000:02:00.0")
    raises: list[int] = []
    copies: list[tuple[int, int]] = []
    mono = time.monotonic_ns
    raise_msi, dma_copy = hw.raise_msi, hw.dma_copy

    def timed_raise(vector: int) -> bool:
        raises.append(mono())
        return raise_msi(vector)

    def timed_copy(dst: int, src: int, size: int, what: str = "DMA") -> bool:
        t0 = mono()
        ok = dma_copy(dst, src, size, what)
        copies.append((size, mono() - t0))
        return ok

    hw.raise_msi, hw.dma_copy = timed_raise, timed_copy
    fd, out = tempfile.mkstemp(prefix="vfiosim-bench-dmacopy-")
    os.close(fd)
    try:
        rc = run_main([prog, "bench", str(n_big), str(n_small), out], "x86", None, kernel=k)
        if rc != 0:
            raise RuntimeError(f"dmacopy_run bench failed with status {rc}")
        with open(out) as f:
            lines = [line.split() for line in f]
    finally:
        k.shutdown()
        if os.path.exists(out):
            os.unlink(out)
    pvm_ns = int(lines[0][1])
    big = [tuple(map(int, x[1:])) for x in lines if x[0] == "big"]
    small = [tuple(map(int, x[1:])) for x in lines if x[0] == "small"]
    if len(raises) != len(big) + len(small):
        raise RuntimeError(f"{len(raises)} MSIs raised for {len(big) + len(small)} copies")
    small_raises = raises[len(big):]
    e2e_big = _median([t2 - t0 for t0, _t1, t2 in big])
    copy_big = _median([t for size, t in copies if size == 1 << 20])
    return {
        "msi_latency_us": round(_median([t2 - r for (_t0, _t1, t2), r
                                         in zip(small, small_raises, strict=True)]) / 1000, 2),
        "msi_latency_p90_us": round(sorted(t2 - r for (_t0, _t1, t2), r
                                           in zip(small, small_raises, strict=True))
                                    [len(small) * 9 // 10] / 1000, 2),
        "dmacopy_small_doorbell_to_wake_us": round(_median([t2 - t0 for t0, _t1, t2 in small])
                                                   / 1000, 2),
        "dmacopy_doorbell_pwrite_us": round(_median([t1 - t0 for t0, t1, _t2 in small]) / 1000,
                                            2),
        "dmacopy_1MiB_e2e_us": round(e2e_big / 1000, 1),
        "dmacopy_copy_us": round(copy_big / 1000, 1),
        "dmacopy_native_pvm_1MiB_us": round(pvm_ns / 1000, 1),
        "dmacopy_ratio": round(pvm_ns / e2e_big, 3),
        "dmacopy_copy_ratio": round(pvm_ns / copy_big, 3),
        "dmacopy_1MiB_e2e_GBps": round((1 << 20) / e2e_big, 2),
    }


def main() -> int:
    quick = "--quick" in sys.argv
    tmp = tempfile.mkdtemp(prefix="vfiosim-bench-")
    try:
        src = os.path.join(tmp, "b.c")
        exe = os.path.join(tmp, "b")
        with open(src, "w") as f:
            f.write(C_SRC)
        _build(src, exe)
        floor_src = os.path.join(tmp, "floor.c")
        floor_exe = os.path.join(tmp, "floor")
        with open(floor_src, "w") as f:
            f.write(C_FLOOR_SRC)
        _build(floor_src, floor_exe)
        dmacopy_exe = os.path.join(tmp, "dmacopy_run")
        _build(os.path.join(ROOT, "tests", "c", "dmacopy_run.c"), dmacopy_exe)
        env = dict(os.environ, PYTHONPATH=SRC)
        res: dict[str, Any] = {}
        res.update(cli_figures(exe, floor_exe, env, 1 if quick else 5))
        res.update(startup_figures(env, 5 if quick else 20))
        res.update(dmacopy_figures(dmacopy_exe, 10 if quick else 50, 200 if quick else 2000))
        res["pinned_one_cpu"] = os.environ.get("VFIOSIM_RUN_PIN", "1") != "0"
        res["cpus"] = len(os.sched_getaffinity(0))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
