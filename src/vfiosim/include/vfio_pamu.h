/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * vfio_pamu.h - the Freescale PAMU additions to <linux/vfio.h>, as served by vfiosim.
 *
 * These are the VFIO PAMU definitions of the Freescale/NXP QorIQ SDK kernels
 * (include/uapi/linux/vfio.h there; never merged upstream), for C programs that run
 * under vfiosim.  Include it after, or instead of, <linux/vfio.h>:
 *
 *	#include <linux/vfio.h>
 *	#include "vfio_pamu.h"
 *
 * NOTE: the numbers collide with mainline on purpose (vfiosim SPEC section 3.2, 3.6):
 *  - VFIO_FSL_PAMU_IOMMU (2) is mainline's VFIO_SPAPR_TCE_IOMMU;
 *  - ioctls VFIO_BASE + 15 ... + 19 are mainline's VFIO_IOMMU_ENABLE, VFIO_IOMMU_DISABLE,
 *    VFIO_IOMMU_DIRTY_PAGES / VFIO_IOMMU_SPAPR_REGISTER_MEMORY,
 *    VFIO_IOMMU_SPAPR_UNREGISTER_MEMORY and VFIO_IOMMU_SPAPR_TCE_CREATE on a container
 *    (and other ioctls on a device fd).
 * A container dispatches them by the IOMMU backend chosen with VFIO_SET_IOMMU, so the
 * collision is harmless as long as one machine never has both PAMU and sPAPR.
 *
 * The layouts are the SDK's.  Every 64-bit field is __aligned_u64 so that the offsets
 * (and the implicit 4-byte holes before them) are the same on 32- and 64-bit ABIs:
 *
 *   struct vfio_pamu_attr            32 bytes: attr_info at 16
 *   struct vfio_pamu_msi_bank_map    24 bytes: iova at 16
 *   struct vfio_pamu_msi_bank_unmap  16 bytes: iova at 8
 *
 * MAP_DMA and UNMAP_DMA on a PAMU container use the Type1 structs of <linux/vfio.h>.
 */
#ifndef _VFIOSIM_VFIO_PAMU_H
#define _VFIOSIM_VFIO_PAMU_H

#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/vfio.h>

/* IOMMU type for VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU (= VFIO_SPAPR_TCE_IOMMU). */
#define VFIO_FSL_PAMU_IOMMU		2

/*
 * VFIO_IOMMU_PAMU_GET_ATTR - _IO(VFIO_TYPE, VFIO_BASE + 15, struct vfio_pamu_attr)
 *
 * Gets the iommu attributes for the current vfio container.  Caller sets argsz and
 * attribute; the ioctl fills in attr_info for that attribute.
 * Return: 0 on success, -errno on failure
 */
struct vfio_pamu_attr {
	__u32	argsz;
	__u32	flags;	/* must be 0 */
#define VFIO_ATTR_GEOMETRY	0
#define VFIO_ATTR_WINDOWS	1
#define VFIO_ATTR_PAMU_STASH	2
	__u32	attribute;
	/* 4 bytes of padding */
	union {
		/* VFIO_ATTR_GEOMETRY */
		struct {
			/* lowest iova that can be mapped */
			__aligned_u64 aperture_start;
			/* highest iova that can be mapped, inclusive */
			__aligned_u64 aperture_end;
		} attr;

		/* VFIO_ATTR_WINDOWS: number of windows in the aperture */
		__u32 windows;

		/* VFIO_ATTR_PAMU_STASH */
		struct {
			__u32 cpu;	/* target CPU */
			__u32 cache;	/* target cache: PAMU_ATTR_CACHE_* */
		} stash;
	} attr_info;
};
#define VFIO_IOMMU_PAMU_GET_ATTR	_IO(VFIO_TYPE, VFIO_BASE + 15)

/* Stash targets (enum pamu_stash_target, arch/powerpc/include/asm/fsl_pamu_stash.h). */
#define PAMU_ATTR_CACHE_L1	1
#define PAMU_ATTR_CACHE_L2	2
#define PAMU_ATTR_CACHE_L3	3

/*
 * VFIO_IOMMU_PAMU_SET_ATTR - _IO(VFIO_TYPE, VFIO_BASE + 16, struct vfio_pamu_attr)
 *
 * Sets the iommu attributes for the current vfio container: argsz, attribute and the
 * attr_info fields of that attribute.
 * Return: 0 on success, -errno on failure
 */
#define VFIO_IOMMU_PAMU_SET_ATTR	_IO(VFIO_TYPE, VFIO_BASE + 16)

/*
 * VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT - _IO(VFIO_TYPE, VFIO_BASE + 17)
 *
 * No argument.  Returns the number of MSI banks of the platform, i.e. how many aperture
 * windows to keep for MSI banks when setting the geometry and window count.
 * Return: bank count on success, -errno on failure
 */
#define VFIO_IOMMU_PAMU_GET_MSI_BANK_COUNT	_IO(VFIO_TYPE, VFIO_BASE + 17)

/*
 * VFIO_IOMMU_PAMU_MAP_MSI_BANK - _IO(VFIO_TYPE, VFIO_BASE + 18, struct vfio_pamu_msi_bank_map)
 *
 * Maps the MSI bank msi_bank_index at iova (one window).  flags: VFIO_DMA_MAP_FLAG_READ
 * and/or VFIO_DMA_MAP_FLAG_WRITE.
 * Return: 0 on success, -errno on failure
 */
struct vfio_pamu_msi_bank_map {
	__u32	argsz;
	__u32	flags;
	__u32	msi_bank_index;	/* which bank, < GET_MSI_BANK_COUNT */
	/* 4 bytes of padding */
	__aligned_u64	iova;	/* start of the window that gets the bank */
};
#define VFIO_IOMMU_PAMU_MAP_MSI_BANK	_IO(VFIO_TYPE, VFIO_BASE + 18)

/*
 * VFIO_IOMMU_PAMU_UNMAP_MSI_BANK - _IO(VFIO_TYPE, VFIO_BASE + 19,
 *					struct vfio_pamu_msi_bank_unmap)
 *
 * Unmaps the MSI bank mapped at iova.
 * Return: 0 on success, -errno on failure
 */
struct vfio_pamu_msi_bank_unmap {
	__u32	argsz;
	__u32	flags;	/* must be 0 */
	__aligned_u64	iova;	/* iova the bank was mapped at */
};
#define VFIO_IOMMU_PAMU_UNMAP_MSI_BANK	_IO(VFIO_TYPE, VFIO_BASE + 19)

#endif /* _VFIOSIM_VFIO_PAMU_H */
