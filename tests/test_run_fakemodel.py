"""A tiny fake model for the runner's plumbing tests (no vfiosim model needed).

Container: GET_API_VERSION 0, CHECK_EXTENSION 1, 0x3bf0 (a counted side effect: returns and
increments ``counter``), 0x3bf1 (raises RuntimeError: an injected supervisor bug), 0x3bf2
(struct in/out: reads argsz + u32 and writes value+1 back).  Group /dev/vfio/<N>: one open at
a time (EBUSY), GET_DEVICE_FD returns a device file.  Device: 4 KiB read/write region, SET_IRQS
style 0x3bf3 (arg -> {argsz, fd}): takes the eventfd and signals it once.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vfiosim.kernel.uaccess import kerr


class FakeFile:
    kind = "file"

    def __init__(self) -> None:
        self.refs = 1
        self.released = False

    def put(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            self.released = True
            self.release()

    def ioctl(self, proc: Any, request: int, arg: Any) -> Any:
        raise kerr(errno.ENOTTY)

    def read(self, proc: Any, count: int, offset: int) -> bytes:
        raise kerr(errno.EINVAL)

    def write(self, proc: Any, data: bytes, offset: int) -> int:
        raise kerr(errno.EINVAL)

    def mmap(self, proc: Any, offset: int, length: int, prot: int, flags: int) -> Any:
        raise kerr(errno.ENODEV)

    def release(self) -> None:
        pass


class Container(FakeFile):
    kind = "container"

    def __init__(self, core: FakeCore) -> None:
        super().__init__()
        self.core = core

    def ioctl(self, proc: Any, request: int, arg: Any) -> Any:
        if request == 0x3B64:
            return 0
        if request == 0x3B65:
            return 1
        if request == 0x3BF0:
            self.core.counter += 1
            return 0
        if request == 0x3BF1:
            raise RuntimeError("injected")
        if request == 0x3BF5:
            time.sleep(0.3)
            return 0
        if request == 0x3BF2:
            raw = arg.read(0, 8)
            argsz = int.from_bytes(raw[:4], "little")
            if argsz < 8:
                raise kerr(errno.EINVAL)
            v = int.from_bytes(raw[4:8], "little")
            arg.write(4, (v + 1).to_bytes(4, "little"))
            return 0
        raise kerr(errno.ENOTTY)


class Group(FakeFile):
    kind = "group"

    def __init__(self, core: FakeCore, number: int) -> None:
        super().__init__()
        self.core = core
        self.number = number

    def ioctl(self, proc: Any, request: int, arg: Any) -> Any:
        if request == 0x3B6A:
            name = arg.read(0, 13).split(b"\0")[0].decode()
            if name != "0000:01:00.0":
                raise kerr(errno.ENODEV)
            self.refs += 1
            return Device(self)
        raise kerr(errno.ENOTTY)

    def release(self) -> None:
        self.core.open_groups.discard(self.number)
        self.core.released.append(f"group{self.number}")


class Device(FakeFile):
    kind = "device"

    def __init__(self, group: Group) -> None:
        super().__init__()
        self.group = group
        self.region = bytearray(4096)

    def read(self, proc: Any, count: int, offset: int) -> bytes:
        return bytes(self.region[offset:offset + count])

    def write(self, proc: Any, data: bytes, offset: int) -> int:
        data = data[: max(0, 4096 - offset)]
        self.region[offset:offset + len(data)] = data
        return len(data)

    def ioctl(self, proc: Any, request: int, arg: Any) -> Any:
        if request == 0x3BF3:
            raw = arg.read(0, 8)
            fd = int.from_bytes(raw[4:8], "little", signed=True)
            ev = proc.eventfd_get(fd)
            ev.signal()
            ev.put()
            return 0
        if request == 0x3BF4:  # DMA-like: write 8 bytes at the address in arg.value
            proc.mm.dma_write(arg.value, b"DMA-OK!\0")
            return 0
        raise kerr(errno.ENOTTY)

    def release(self) -> None:
        self.group.core.released.append("device")
        self.group.put()


class FakeCore:
    def __init__(self) -> None:
        self.counter = 0
        self.open_groups: set[int] = set()
        self.released: list[str] = []

    def open(self, proc: Any, path: str, flags: int) -> FakeFile:
        if path == "/dev/vfio/vfio":
            return Container(self)
        if path == "/dev/vfio/1":
            if 1 in self.open_groups:
                raise kerr(errno.EBUSY)
            self.open_groups.add(1)
            return Group(self, 1)
        raise kerr(errno.ENOENT)


class FakeHw:
    is_pcie = False
    bars: list[Any] = []

    def __init__(self) -> None:
        self.cfg = bytearray(256)
        self.cfg[0:4] = bytes([0x34, 0x12, 0xE8, 0x11])
        self.cfg[8] = 0x10
        self.cfg[0x0B] = 0xFF

    def cfg_read(self, off: int, size: int) -> int:
        return int.from_bytes(self.cfg[off:off + size], "little")

    def cfg_write(self, off: int, size: int, value: int) -> None:
        self.cfg[off:off + size] = value.to_bytes(size, "little")


@dataclass
class Rec:
    name: str
    group: int
    vendor: int
    device: int
    driver: str
    hw: Any = field(default_factory=FakeHw)


class FakeMachine:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.devices = [Rec("0000:01:00.0", 1, 0x1234, 0x11E8, "vfio-pci")]


class FakeKernel:
    def __init__(self) -> None:
        self.machine = FakeMachine()
        self.core = FakeCore()

    def groups(self) -> list[int]:
        return [1]

    def shutdown(self) -> None:
        pass


def fake_kernel() -> FakeKernel:
    return FakeKernel()


def test_fake_model_is_consistent() -> None:
    k = FakeKernel()
    c = k.core.open(None, "/dev/vfio/vfio", os.O_RDWR)
    assert c.kind == "container"
    g = k.core.open(None, "/dev/vfio/1", os.O_RDWR)
    try:
        k.core.open(None, "/dev/vfio/1", os.O_RDWR)
    except OSError as e:
        assert e.errno == errno.EBUSY
    else:
        raise AssertionError("second group open must fail")
    g.put()
    assert k.core.open_groups == set()
