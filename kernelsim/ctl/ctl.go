// Package ctl is the client of kernelsim's privileged control socket, used
// by the CRIU plugin and the debug tools.
package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"drmcr/kernelsim"
	"drmcr/kernelsim/uapi"
)

// Client is a control connection. Whatever it pauses is resumed, and every
// restore session it opened and did not close is aborted, if it
// disconnects.
type Client struct {
	c *uapi.Conn
}

// Dial connects to dir/control.
func Dial(dir string) (*Client, error) {
	c, err := uapi.Dial(kernelsim.ControlPath(dir))
	if err != nil {
		return nil, fmt.Errorf("kernelsim control socket: %w", err)
	}
	return &Client{c: c}, nil
}

// Close disconnects.
func (c *Client) Close() error { return c.c.Close() }

// Identify tells which socket inodes are kernelsim drm files or dma-bufs.
func (c *Client) Identify(inodes []uint64) ([]*uapi.IdentifiedObject, error) {
	r := &uapi.IdentifyReply{}
	_, err := c.c.Call(uapi.OpIdentify, &uapi.IdentifyRequest{Inodes: inodes}, r)
	return r.Objects, err
}

// Pause pauses and drains the files' contexts within timeout.
func (c *Client) Pause(fileIDs []uint64, timeout time.Duration) error {
	_, err := c.c.Call(uapi.OpPause, &uapi.PauseRequest{FileIds: fileIDs, TimeoutNs: int64(timeout)}, nil)
	return err
}

// Resume resumes files paused or checkpointed.
func (c *Client) Resume(fileIDs []uint64) error {
	_, err := c.c.Call(uapi.OpResume, &uapi.ResumeRequest{FileIds: fileIDs}, nil)
	return err
}

// CheckpointFile captures a paused drm file.
func (c *Client) CheckpointFile(id uint64) (*uapi.FileCheckpoint, error) {
	r := &uapi.FileCheckpoint{}
	_, err := c.c.Call(uapi.OpCheckpointFile, &uapi.CheckpointFileRequest{FileId: id}, r)
	return r, err
}

// CheckpointDmaBuf describes the BO of a dma-buf.
func (c *Client) CheckpointDmaBuf(ino uint64) (*uapi.BoState, error) {
	r := &uapi.CheckpointDmaBufReply{}
	_, err := c.c.Call(uapi.OpCheckpointDmaBuf, &uapi.CheckpointDmaBufRequest{Inode: ino}, r)
	return r.Bo, err
}

// PagesTarget is a pages file CheckpointBOs writes: the BOs, back to back
// in order from Offset on.
type PagesTarget struct {
	IDs    []uint64
	File   *os.File
	Offset uint64
}

// CheckpointBOs has the kernel write the contents of BOs into pages
// files, checksummed in chunks, the files side by side; the reply has
// what was written into each target, in order.
func (c *Client) CheckpointBOs(targets []PagesTarget, alg uapi.Checksum) ([]*uapi.PagesExtent, error) {
	req := &uapi.CheckpointBosRequest{Checksum: alg.String()}
	fds := make([]int, len(targets))
	for i, t := range targets {
		req.Targets = append(req.Targets, &uapi.PagesTarget{BoIds: t.IDs, Offset: t.Offset})
		fds[i] = int(t.File.Fd())
	}
	r := &uapi.CheckpointBosReply{}
	if _, err := c.c.Call(uapi.OpCheckpointBos, req, r, fds...); err != nil {
		return nil, err
	}
	if len(r.Targets) != len(targets) {
		return nil, fmt.Errorf("CHECKPOINT_BOS: %d extent(s) for %d target(s)", len(r.Targets), len(targets))
	}
	return r.Targets, nil
}

// CheckpointIO returns the traffic in flight on one connection of a drm
// file that CheckpointFile froze: ino is the client inode of the
// connection, sock the client's end of it (criu's copy), which the kernel
// only inspects.
func (c *Client) CheckpointIO(fileID, ino uint64, sock int) (*uapi.PendingIO, error) {
	r := &uapi.PendingIO{}
	_, err := c.c.Call(uapi.OpCheckpointIo, &uapi.CheckpointIoRequest{FileId: fileID, Inode: ino}, r, sock)
	return r, err
}

// IdentifyMemory tells which files (device and inode, as
// /proc/PID/maps shows them) are the memory of BOs.
func (c *Client) IdentifyMemory(files []*uapi.MemoryRef) ([]*uapi.IdentifiedMemory, error) {
	r := &uapi.IdentifyMemoryReply{}
	_, err := c.c.Call(uapi.OpIdentifyMemory, &uapi.IdentifyMemoryRequest{Files: files}, r)
	return r.Files, err
}

// ChecksumBOs has the kernel checksum the contents of BOs, each on its
// own in chunks with alg, writing nothing (criu saves them as mapped
// memory).
func (c *Client) ChecksumBOs(ids []uint64, alg uapi.Checksum) ([]*uapi.ContentChunk, error) {
	r := &uapi.CheckpointBosReply{}
	_, err := c.c.Call(uapi.OpCheckpointBos, &uapi.CheckpointBosRequest{BoIds: ids, ChecksumOnly: true, Checksum: alg.String()}, r)
	return r.Chunks, err
}

// AdoptMemory hands the kernel the memfd criu restored for a mapped BO
// of the session (f, which the caller keeps), and the restored tasks
// that map it.
func (c *Client) AdoptMemory(token []byte, boID uint64, f *os.File, holders []int32) error {
	_, err := c.c.Call(uapi.OpSessionAdoptMemory, &uapi.SessionAdoptMemoryRequest{Token: token, BoId: boID, Holders: holders}, nil, int(f.Fd()))
	return err
}

// OpenSession starts a restore session.
func (c *Client) OpenSession(req *uapi.SessionOpenRequest) (*uapi.SessionOpenReply, error) {
	r := &uapi.SessionOpenReply{}
	_, err := c.c.Call(uapi.OpSessionOpen, req, r)
	return r, err
}

// LoadPages has the kernel load, in the background, the contents that
// lie in pages file i of the session from f.
func (c *Client) LoadPages(token []byte, i uint32, f *os.File) error {
	_, err := c.c.Call(uapi.OpSessionLoadPages, &uapi.SessionLoadPagesRequest{Token: token, PagesFile: i}, nil, int(f.Fd()))
	return err
}

// ResumeTask resumes the files a restored task claimed, once their
// contents are in.
func (c *Client) ResumeTask(token []byte, pid int, timeout time.Duration) error {
	_, err := c.c.Call(uapi.OpSessionResume, &uapi.SessionResumeRequest{Token: token, Pid: int32(pid), TimeoutNs: int64(timeout)}, nil)
	return err
}

// CloseSession ends a restore session; abort destroys what it created.
func (c *Client) CloseSession(token []byte, abort bool) error {
	_, err := c.c.Call(uapi.OpSessionClose, &uapi.SessionCloseRequest{Token: token, Abort: abort}, nil)
	return err
}

// Devices lists the kernel's devices.
func (c *Client) Devices() ([]*uapi.DeviceInfo, error) {
	r := &uapi.DevicesReply{}
	_, err := c.c.Call(uapi.OpDevices, &uapi.DevicesRequest{}, r)
	return r.Devices, err
}

// Debug returns the kernel's debug view.
func (c *Client) Debug() (*kernelsim.DebugState, error) {
	js, err := c.DebugJSON()
	if err != nil {
		return nil, err
	}
	st := &kernelsim.DebugState{}
	if err := json.Unmarshal([]byte(js), st); err != nil {
		return nil, fmt.Errorf("debug view: %w", err)
	}
	return st, nil
}

// DebugJSON returns the kernel's debug view as JSON text. The view of a
// busy kernel is larger than a message, so the kernel writes it into a
// memfd passed with the request.
func (c *Client) DebugJSON() (string, error) {
	fd, err := unix.MemfdCreate("kernelsim-debug", unix.MFD_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("debug view: memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "kernelsim-debug")
	defer f.Close()
	r := &uapi.DebugReply{}
	if _, err := c.c.Call(uapi.OpDebug, &uapi.DebugRequest{}, r, fd); err != nil {
		return "", err
	}
	if r.Json != "" {
		return r.Json, nil
	}
	js, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
	if err != nil {
		return "", fmt.Errorf("debug view: %w", err)
	}
	return string(js), nil
}
