// Package dma models the kernel's cross-driver synchronisation objects:
// dma_fence (Fence), dma_resv (Resv), drm_syncobj (Syncobj) and the sw_sync
// test timeline (SwSyncTimeline).
//
// Fences are free-standing: they point at nothing that created them, so a
// fence stays valid and queryable after its scheduler, entity or job is gone.
// Go's garbage collector owns the memory; the Get/Put reference count exists
// for leak accounting, mirroring dma_fence_get/dma_fence_put, and feeds the
// global registry behind LiveFences and Fences.
package dma
