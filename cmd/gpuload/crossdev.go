package main

import "time"

// crossdev: prodcons across two devices. The producer (parent) works on
// renderD<-minor>, the consumer child on renderD<-minor2>: the shared
// buffer Sh is a BO of the producer's device that the consumer imports
// into a file of the other device, and the consumer's own buffers live on
// its device. The plan, and so the result, is prodcons's: which device
// runs a job does not change what it computes. A checkpoint mid-run holds
// two devices and a dma-buf shared across them; a restore may put them on
// any two devices of the same driver.

func init() {
	register(&scenario{
		name:   "crossdev",
		order:  12,
		desc:   "prodcons across two devices: the producer on -minor shares a dma-buf with a consumer child on -minor2 (default -minor + 1), which imports the BO into a file of its own device",
		steps:  40,
		delay:  100 * time.Millisecond,
		expect: prodconsExpect,
		run:    abortChildrenOnError(prodconsRun),
		roles: map[string]func(*runner, *peer) error{"consumer": func(r *runner, parent *peer) error {
			return prodconsConsume(r, parent, r.p.minor2)
		}},
	})
}
