package kernelsim

import (
	"fmt"
	"slices"
)

// HoldRequest puts pkt among the requests of drm file id's own connection
// that are received and not started, as Freeze's drain of the socket does:
// for the tests of a request read by the drain whose readiness the
// netpoller never reported to the connection's reader.
func HoldRequest(k *Kernel, id uint64, pkt []byte) error {
	k.mu.Lock()
	f := k.files[id]
	var c *conn
	if f != nil {
		for _, e := range f.ios {
			if cn, ok := e.io.(*conn); ok && !cn.channel {
				c = cn
			}
		}
	}
	k.mu.Unlock()
	if c == nil {
		return fmt.Errorf("drm file %d has no connection of its own", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.frozen {
		return fmt.Errorf("drm file %d's connection is not frozen", id)
	}
	c.requests++
	c.held = append(c.held, &request{c: c, n: c.requests, pkt: slices.Clone(pkt)})
	return nil
}
