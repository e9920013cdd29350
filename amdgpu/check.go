package amdgpu

import (
	"fmt"

	"drmcr/drvstate"
	"drmcr/images"
	"drmcr/kernelsim/uapi"
)

// CheckFile implements drmcore.DriverPlugin: it checks every field of the
// driver blob of a drm file image, creating nothing: contexts (ids the
// kernel's idr takes, each once), their saved jobs (BO ids of the
// checkpoint, handles of the file on those BOs, commands within their BOs,
// where the job stands, fences waited on that a job provides), sw_sync
// timelines and syncobjs (kinds it knows, jobs and timelines that exist),
// and that the file's summary of its jobs' fences is the blob's. bo gives
// a BO of the checkpoint by id (nil for none).
func (*Plugin) CheckFile(img *images.DrmFile, bo func(id uint64) *uapi.BoState) []images.Problem {
	priv, ok, out := drvstate.CheckImage(img, Driver, Decode)
	if !ok {
		return out
	}
	const blob = "state.driver_private"

	b := drvstate.Blob{Field: blob, Syncobjs: priv.Syncobjs, SwSyncs: priv.SwSyncs}
	for i, cs := range priv.Contexts {
		b.Contexts = append(b.Contexts, drvstate.Context{Field: fmt.Sprintf("%s.contexts[%d]", blob, i), State: cs})
	}
	probs, _ := drvstate.Check(img, b, bo)
	return append(out, probs...)
}
