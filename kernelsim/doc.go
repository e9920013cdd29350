// Package kernelsim is a user-space model of the Linux DRM kernel: devices
// with render nodes, drm files, GEM buffer objects and their handles, PRIME
// export/import with dma-buf identity, per-file GPU address spaces,
// contexts on top of the GPU scheduler (package sched), dma_resv implicit
// synchronisation and syncobjs (package dma), and a simulated GPU that
// executes jobs on BO contents (package gpu).
//
// A Kernel is served to real processes by Server: a render node is a
// SOCK_SEQPACKET socket, each connection is one drm file, each request one
// ioctl (package uapi), and a dma-buf is a socket the kernel passes with
// SCM_RIGHTS, so that the same dma-buf is always the same open file with
// the same inode, as on Linux.
//
// Locking: Kernel.mu (like the old struct_mutex) protects the object graph:
// handles, PRIME tables, reference counts, mappings. BO contents have their
// own lock; jobs run without Kernel.mu.
//
// Lock order, outer first: Server.mu, conn.mu (held while a request is
// handled, outside replayable waits), Kernel.mu, accounting.mu (the
// per-user limits), rateLog.mu (the log). The scheduler's locks come
// before Kernel.mu: it calls back into the kernel (to free jobs) with them
// held, which is why Debug reads scheduler state without Kernel.mu.
// sockDiag.mu and each diagSock.mu are taken with no other lock.
package kernelsim
