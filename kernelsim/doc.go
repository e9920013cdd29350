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
// the same inode, as on Linux. Requests on one drm file run concurrently,
// as ioctls on one fd do: a connection's reader runs each request it
// reads, and a request that waits (a fence or syncobj wait, a submit to a
// paused context) goes on waiting in a goroutine of its own while the
// reader reads on. A process that shares a drm file with others attaches
// a connection of its own to it, a reply channel (uapi.OpAttach), so that
// replies reach the process that asked.
//
// CPU mappings (mmap.go): a client maps a BO through its drm file
// (GEM_MMAP) or a dma-buf (DMABUF_MMAP); the BO's memory becomes a sealed
// memfd that the GPU and every mapping share, and the mappings keep the
// BO alive. Coherency goes through fences, as on real hardware: a job's
// writes are visible through a mapping once its fence has signalled; CPU
// writes through a mapping are seen by jobs submitted after them, and the
// CPU must not touch memory a queued or running job writes (or write
// memory one reads). A VRAM BO is write-combined on real hardware (slow
// CPU reads, writes fenced before the GPU reads them), a GTT BO cached;
// the simulation is coherent for both.
//
// Drivers (driver.go) plug in as a Driver, the hooks the core calls as
// Linux's drm core calls a struct drm_driver; the core names none of
// them; each is a package (kernelsim/amdgpu, kernelsim/xe) that registers
// itself when imported.
//
// Locking: Kernel.mu (like the old struct_mutex) protects the object graph:
// handles, PRIME tables, reference counts, mappings, and the drivers'
// state of each file (xe's VMs, bindings and exec queues; an xe preempt
// fence's own lock is a leaf). BO contents have their
// own lock; jobs run without Kernel.mu. Waits hold no lock of the kernel
// or of the connection.
//
// Lock order, outer first: Server.mu, conn.mu (a connection's state: its
// requests running and waiting, its replies queued and sent; held only
// briefly, never across an ioctl), DmaBuf.reqMu (a request on a dma-buf's
// socket), Kernel.mu, Session.loadMu, Backing.mu (a BO's memory), accounting.mu (the per-user
// limits), rateLog.mu (the log). A Context's mu (the pause gate) comes
// before Kernel.mu (Submit takes both); a checkpoint takes it under
// Kernel.mu only once the file is paused, when no submit holds it (Pause
// takes it to set the gate). The scheduler's locks come before
// Kernel.mu: it calls back into the kernel (to free jobs) with them held,
// which is why Debug reads scheduler state without Kernel.mu. A syncobj's
// and a fence's locks are leaves: their callbacks run after they are
// released, and a syncobj wait's own lock (syncobjWait.mu) is taken
// alone or under none but those callbacks. sockDiag.mu and each
// diagSock.mu are taken with no other lock.
package kernelsim
