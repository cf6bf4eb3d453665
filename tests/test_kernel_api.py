"""The in-process Kernel API, options and machine files.  SPEC §2.6, §12.1, §13.1."""

from __future__ import annotations

import ctypes
import errno
import os

import pytest
from vfio_helpers import attach, expect_errno

from vfiosim import Kernel
from vfiosim.kernel.profile import KernelProfile
from vfiosim.machine import OPTION_NAMES, preset_names
from vfiosim.uapi import vfio as V


def test_presets_are_listed():
    assert {"x86", "p4080", "t4240"} <= set(preset_names())


@pytest.mark.parametrize("preset,expected", [
    ("x86", [("0000:01:00.0", 1, 0x1234, 0x11E8, "vfio-pci", "edu"),
             ("0000:02:00.0", 2, None, None, "vfio-pci", "dmacopy")]),
    ("p4080", [("0000:01:00.0", 1, 0x1234, 0x11E8, "vfio-pci", "edu"),
               ("0001:01:00.0", 2, None, None, "vfio-pci", "dmacopy")]),
    ("t4240", [("0000:01:00.0", 1, 0x1234, 0x11E8, "vfio-pci", "edu"),
               ("0001:01:00.0", 2, None, None, "vfio-pci", "dmacopy")]),
])
def test_devices_and_groups_are_stable(make_kernel, preset, expected):
    k = make_kernel(preset)
    devs = k.devices()
    assert [(d.name, d.group, d.driver, d.model) for d in devs] == [
        (n, g, drv, m) for n, g, _, _, drv, m in expected]
    for d, (_, _, vendor, device, _, _) in zip(devs, expected, strict=True):
        if vendor is not None:
            assert (d.vendor, d.device) == (vendor, device)
    assert k.groups() == [1, 2]


def test_unknown_preset_is_valueerror():
    with pytest.raises(ValueError, match="unknown preset 'ppc'"):
        Kernel.from_preset("ppc")


def test_unknown_option_names_it_and_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        Kernel.from_preset("x86", msimode="auto")
    assert "'msimode'" in str(e.value)
    for name in OPTION_NAMES:
        assert name in str(e.value)


def test_kernel_profile_older_than_5_10_is_valueerror():
    with pytest.raises(ValueError, match="older than 5.10"):
        Kernel.from_preset("x86", kernel="5.4")


@pytest.mark.parametrize("opt,value", [
    ("kernel", "6"), ("kernel", 6.1), ("msi_mode", "option-b"), ("clock", "fast"),
    ("contiguous_memory", 1), ("edu_dma_mask_bits", 0), ("edu_dma_delay_ms", -1),
])
def test_bad_option_value_is_valueerror_naming_it(opt, value):
    with pytest.raises(ValueError, match=opt):
        Kernel.from_preset("x86", **{opt: value})


def test_option_that_does_not_apply_is_accepted(make_kernel):
    k = make_kernel("x86", msi_mode="explicit")
    assert k.machine.options.msi_mode == "explicit"


def test_profile_versions_compare_numerically():
    p = KernelProfile.from_string("6.9")
    assert p.before("6.10") and not p.before("6.9") and not p.before("5.19")
    assert not KernelProfile.from_string("7.2").before("6.18")
    assert KernelProfile.from_string("7.2").effective == (6, 18)


def test_from_file_reads_a_machine_file(tmp_path):
    f = tmp_path / "board.toml"
    f.write_text(
        '[machine]\nname = "board"\niommu = "type1"\n[options]\nkernel = "6.1"\n'
        '[[device]]\nname = "0000:05:00.0"\nmodel = "edu"\ngroup = 7\n'
    )
    k = Kernel.from_file(f, clock="manual")
    try:
        assert k.groups() == [7]
        assert k.devices()[0].name == "0000:05:00.0"
        assert str(k.machine.profile) == "6.1"
    finally:
        k.shutdown()


def test_from_file_options_are_overridden_by_keywords(tmp_path):
    f = tmp_path / "board.toml"
    f.write_text('[machine]\niommu = "type1"\n[options]\nkernel = "6.1"\n')
    k = Kernel.from_file(f, kernel="6.6", clock="manual")
    try:
        assert str(k.machine.profile) == "6.6"
    finally:
        k.shutdown()


@pytest.mark.parametrize("text,needle", [
    ('[machine]\niommu = "type1"\nbogus = 1\n', "machine.bogus: unknown key"),
    ('[machine]\niommu = "arm-smmu"\n', "machine.iommu: must be one of"),
    ("[machine]\n", "machine.iommu: missing"),
    ('[machine]\niommu = "type1"\n[options]\nkernel = "5.4"\n', "options.kernel"),
    ('[machine]\niommu = "type1"\n[options]\nfoo = 1\n', "options.foo: unknown option"),
    ('[machine]\niommu = "type1"\n[[device]]\nname = "1:2"\nmodel = "edu"\ngroup = 1\n',
     "device[0].name"),
    ('[machine]\niommu = "type1"\n[[device]]\nname = "0000:01:00.0"\nmodel = "nic"\n'
     'group = 1\n', "device[0].model"),
    ('[machine]\niommu = "type1"\n[[device]]\nname = "0000:01:00.0"\nmodel = "edu"\n',
     "device[0].group: missing"),
    ('[machine]\niommu = "type1"\n[pamu]\ncpus = 4\n', "pamu: only for"),
    ('[machine]\niommu = "type1"\n[iommu]\npgsizes = "4k"\n', "iommu.pgsizes"),
    ('[machine\n', "TOML syntax error"),
    ('[machine]\niommu = "fsl_pamu"\n[[device]]\nname = "0000:01:00.0"\nmodel = "edu"\n'
     'group = 1\n', "device[0].controller: missing"),
])
def test_bad_machine_file_is_one_line_naming_file_and_key(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        Kernel.from_file(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(str(f))
    assert needle in msg


def test_missing_machine_file_is_oserror(tmp_path):
    with pytest.raises(OSError) as e:
        Kernel.from_file(tmp_path / "nope.toml")
    assert e.value.errno == errno.ENOENT


def test_ioctl_accepts_an_address_as_int(x86):
    g = x86.open("/dev/vfio/1")
    st = V.vfio_group_status(argsz=8)
    x86.ioctl(g, V.VFIO_GROUP_GET_STATUS, ctypes.addressof(st))
    assert st.flags == V.VFIO_GROUP_FLAGS_VIABLE


def test_ioctl_bad_address_is_efault(x86):
    g = x86.open("/dev/vfio/1")
    expect_errno(errno.EFAULT, x86.ioctl, g, V.VFIO_GROUP_GET_STATUS, 0x10)


def test_ioctl_read_only_buffer_is_accepted_where_the_call_only_reads(x86):
    c = x86.open("/dev/vfio/vfio")
    g = x86.open("/dev/vfio/1")
    assert x86.ioctl(g, V.VFIO_GROUP_SET_CONTAINER, bytes(ctypes.c_int32(c))) == 0
    # ... and EFAULT where it must write.
    expect_errno(errno.EFAULT, x86.ioctl, g, V.VFIO_GROUP_GET_STATUS, bytes(V.vfio_group_status(
        argsz=8)))


def test_context_manager_closes_everything():
    with Kernel.from_preset("x86", clock="manual") as k:
        attach(k)
    assert k.dump()["fds"] == {}


def test_dump_describes_state(x86):
    c, g = attach(x86)
    d = x86.dump()
    assert d["machine"] == "x86" and d["kernel_profile"] == "6.18"
    assert d["fds"] == {c: f"container#{x86.machine and d['fds'][c].split('#')[1]}",
                        g: "group 1"}


def test_open_normalises_paths(x86):
    x86.close(x86.open("/dev/vfio/../vfio/vfio", os.O_RDWR))


def test_trace_records_every_call(x86):
    import io
    import json

    out = io.StringIO()
    x86.trace_to(out)
    c = x86.open("/dev/vfio/vfio")
    x86.ioctl(c, V.VFIO_GET_API_VERSION)
    with pytest.raises(OSError):
        x86.ioctl(c, V.VFIO_IOMMU_MAP_DMA, V.vfio_iommu_type1_dma_map(argsz=32))
    x86.close(c)
    recs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["syscall"] for r in recs] == ["openat", "ioctl", "ioctl", "close"]
    assert recs[0]["path"] == "/dev/vfio/vfio" and recs[0]["result"] == c
    assert recs[1]["request"] == "VFIO_GET_API_VERSION" and recs[1]["result"] == 0
    assert recs[2]["request"] == "VFIO_IOMMU_MAP_DMA" and recs[2]["argsz"] == 32
    assert recs[2]["errno"] == "EINVAL" and recs[2]["result"] is None
    x86.trace_to(None)
    x86.open("/dev/vfio/vfio")
    assert len(out.getvalue().splitlines()) == 4


def test_pamu_machine_memory_must_stay_below_2_36(tmp_path):
    f = tmp_path / "big.toml"
    f.write_text('[machine]\niommu = "fsl_pamu"\n[memory]\ndram_size = 0x20_0000_0000\n'
                 'contiguous_pool_base = 0x40_0000_0000\n')
    with pytest.raises(ValueError, match=r"memory.dram_size: ends at 0x2000000000, above 2\^36"):
        Kernel.from_file(f)


def test_manual_clock_moves_only_when_advanced(x86):
    from vfio_helpers import device_name, get_device_fd

    c, g = attach(x86)
    d = get_device_fd(x86, g, device_name(x86, 1))
    bar0 = 0
    x86.pwrite(d, (5).to_bytes(4, "little"), bar0 + 0x08)  # edu factorial of 5
    assert int.from_bytes(x86.pread(d, 4, bar0 + 0x20), "little") & 1  # computing
    assert x86.advance(0) == 0
    assert x86.run_until_idle() >= 1
    assert int.from_bytes(x86.pread(d, 4, bar0 + 0x20), "little") & 1 == 0
    assert int.from_bytes(x86.pread(d, 4, bar0 + 0x08), "little") == 120


def test_real_clock_refuses_manual_stepping(make_kernel):
    k = make_kernel("x86", clock="real")
    with pytest.raises(RuntimeError, match="manual clock"):
        k.advance(1000)
