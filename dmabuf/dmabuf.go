// Package dmabuf is the DRM plugin's sub-plugin for dma-buf files. A
// dma-buf is identified by the inode of its file; at restore, whichever
// task first needs the BO it carries creates it, and every holder of the
// dma-buf gets the same new file.
package dmabuf

import (
	"fmt"

	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// Plugin is the dma-buf sub-plugin.
type Plugin struct{}

// New returns the sub-plugin.
func New() *Plugin { return &Plugin{} }

// DumpDmaBuf implements drmcore.DmaBufPlugin.
func (*Plugin) DumpDmaBuf(ino uint64, pid int32, bo *uapi.BoState) (*images.DmaBuf, error) {
	if bo == nil {
		return nil, fmt.Errorf("no BO behind dma-buf inode %d", ino)
	}
	if bo.DmabufInode != ino {
		return nil, fmt.Errorf("BO %d was exported as inode %d, not %d", bo.BoId, bo.DmabufInode, ino)
	}
	return &images.DmaBuf{Version: images.Version, Inode: ino, BoId: bo.BoId, Pid: pid}, nil
}

// RestoreDmaBuf implements drmcore.DmaBufPlugin.
func (*Plugin) RestoreDmaBuf(img *images.DmaBuf) (*uapi.RestoreDmaBuf, error) {
	if img.Inode == 0 || img.BoId == 0 {
		return nil, fmt.Errorf("dma-buf image without inode or BO")
	}
	return &uapi.RestoreDmaBuf{Inode: img.Inode, BoId: img.BoId}, nil
}
