package drmcore

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"drmcr/images"
	"drmcr/internal/units"
	"drmcr/kernelsim/uapi"
)

// Restoring on another machine: the devices a checkpoint's objects were on
// (the inventory records them) are mapped onto the devices of the kernel
// the restore runs against (its DEVICES list), each onto one device of the
// same driver with enough memory for what the checkpoint puts there. As in
// CRIU's amdgpu plugin, which maps the GPUs of a checkpoint's topology onto
// the local ones, the mapping is made once, before anything is created,
// and the restore request then names the new devices only.

// DeviceMapSetting is the setting that states a mapping explicitly.
const DeviceMapSetting = "DRMCR_DEVICE_MAP"

// DeviceRef names a device by its render node minor (renderD128) or by its
// gpu id (0x10020080).
type DeviceRef struct {
	ByGpuID bool
	Minor   uint32 // when !ByGpuID
	GpuID   uint32 // when ByGpuID
}

func (r DeviceRef) String() string {
	if r.ByGpuID {
		return fmt.Sprintf("%#x", r.GpuID)
	}
	return fmt.Sprintf("renderD%d", r.Minor)
}

func parseDeviceRef(s string) (DeviceRef, error) {
	if rest, ok := strings.CutPrefix(s, "renderD"); ok {
		n, err := strconv.ParseUint(rest, 10, 32)
		if err != nil || rest == "" || rest[0] == '+' {
			return DeviceRef{}, fmt.Errorf("%q: want renderD<minor> or a gpu id such as 0x10020080", s)
		}
		return DeviceRef{Minor: uint32(n)}, nil
	}
	if rest, ok := strings.CutPrefix(strings.ToLower(s), "0x"); ok && rest != "" {
		n, err := strconv.ParseUint(rest, 16, 32)
		if err == nil {
			return DeviceRef{ByGpuID: true, GpuID: uint32(n)}, nil
		}
	}
	return DeviceRef{}, fmt.Errorf("%q: want renderD<minor> or a gpu id such as 0x10020080", s)
}

// DeviceMapEntry maps one device of a checkpoint onto one of the kernel's.
type DeviceMapEntry struct{ From, To DeviceRef }

// DeviceMap is an explicit mapping: DRMCR_DEVICE_MAP, entries FROM=TO
// separated by commas, each side renderD<minor> or a gpu id in hex
// (0x10020080); FROM names a device of the checkpoint, TO one of the
// kernel the restore runs against. Devices it leaves out are mapped by
// default (see MapDevices).
type DeviceMap []DeviceMapEntry

// ParseDeviceMap parses DRMCR_DEVICE_MAP's value; "" is no entry.
func ParseDeviceMap(s string) (DeviceMap, error) {
	var m DeviceMap
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		from, to, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q: want FROM=TO, e.g. renderD128=renderD131", DeviceMapSetting, item)
		}
		f, err := parseDeviceRef(strings.TrimSpace(from))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", DeviceMapSetting, err)
		}
		t, err := parseDeviceRef(strings.TrimSpace(to))
		if err != nil {
			return nil, fmt.Errorf("%s: %v", DeviceMapSetting, err)
		}
		for _, e := range m {
			if e.From == f {
				return nil, fmt.Errorf("%s: %s is mapped twice", DeviceMapSetting, f)
			}
		}
		m = append(m, DeviceMapEntry{From: f, To: t})
	}
	return m, nil
}

// DeviceNeed is a device of a checkpoint and the memory its BOs take there.
type DeviceNeed struct {
	Device    *images.Device
	VRAM, GTT uint64
}

func (n DeviceNeed) String() string {
	return fmt.Sprintf("renderD%d (%s, gpu id %#x, %s of VRAM and %s of GTT used)",
		n.Device.Minor, n.Device.Driver, n.Device.GpuId, units.Format(n.VRAM), units.Format(n.GTT))
}

// fits says whether device d can take what n puts on its device.
func (n DeviceNeed) fits(d *uapi.DeviceInfo) bool {
	return d.Driver == n.Device.Driver && d.VramSize >= n.VRAM && d.GttSize >= n.GTT
}

// Why a device was mapped where it was.
const (
	ByDeviceMap   = "by " + DeviceMapSetting
	BySameMinor   = "same minor"
	ByFirstFree   = "first free device of its driver with enough memory"
	ByRearranging = "rearranged so that every device of the checkpoint has one"
)

// DeviceAssignment is where one device of a checkpoint is restored.
type DeviceAssignment struct {
	DeviceNeed
	To  *uapi.DeviceInfo
	Why string // ByDeviceMap, BySameMinor, ...
}

// DeviceMapping is where each device of a checkpoint is restored, in the
// checkpoint's minor order.
type DeviceMapping struct {
	Assignments []DeviceAssignment
	// Unused are the explicit entries that name no device of the
	// checkpoint: a host's config file may map devices that a given
	// checkpoint does not use.
	Unused []DeviceMapEntry
}

// Targets gives, by checkpointed minor, the device it is restored on (what
// kernelsim.RetargetRestore takes).
func (m *DeviceMapping) Targets() map[uint32]*uapi.DeviceInfo {
	out := make(map[uint32]*uapi.DeviceInfo, len(m.Assignments))
	for _, a := range m.Assignments {
		out[a.Device.Minor] = a.To
	}
	return out
}

// Moved says whether a device of the checkpoint goes to a device of
// another minor or gpu id: the restore is on other devices.
func (m *DeviceMapping) Moved() bool {
	for _, a := range m.Assignments {
		if a.To.Minor != a.Device.Minor || a.To.GpuId != a.Device.GpuId {
			return true
		}
	}
	return false
}

// String is the mapping as criu's log shows it: one clause per device,
// "renderD128 (amdgpu, gpu id 0x1111) -> renderD131 (gpu id 0x2222): why".
func (m *DeviceMapping) String() string {
	var parts []string
	for _, a := range m.Assignments {
		parts = append(parts, fmt.Sprintf("renderD%d (%s, gpu id %#x) -> renderD%d (gpu id %#x): %s",
			a.Device.Minor, a.Device.Driver, a.Device.GpuId, a.To.Minor, a.To.GpuId, a.Why))
	}
	s := strings.Join(parts, "; ")
	for _, e := range m.Unused {
		s += fmt.Sprintf("; %s entry %s=%s not used: the checkpoint has no device %s", DeviceMapSetting, e.From, e.To, e.From)
	}
	return s
}

// DeviceProblem is a device of a checkpoint that has no device to go to,
// and why.
type DeviceProblem struct {
	DeviceNeed
	Reason string
}

func (p DeviceProblem) String() string { return p.DeviceNeed.String() + ": " + p.Reason }

// DeviceMapError is a mapping that cannot be made: one problem per device
// of the checkpoint that has no device to go to.
type DeviceMapError struct {
	Problems []DeviceProblem
}

func (e *DeviceMapError) Error() string {
	var s []string
	for _, p := range e.Problems {
		s = append(s, p.String())
	}
	return fmt.Sprintf("%d device(s) of the checkpoint cannot be mapped onto the kernel's: %s", len(e.Problems), strings.Join(s, "; "))
}

// MapDevices maps each device of a checkpoint (needs, in minor order) onto
// a device of targets (the kernel's, from its DEVICES list), each onto a
// different one of the same driver whose VRAM and GTT hold what the
// checkpoint puts on it. In this order:
//
//  1. the explicit entries (DRMCR_DEVICE_MAP), which must name a device of
//     the kernel of the same driver with enough memory that no other
//     entry names;
//  2. every other device to the device of the same minor, if it is free,
//     of the same driver and has enough memory;
//  3. the rest, in minor order, each to the first free device (in minor
//     order) of its driver with enough memory;
//  4. if that leaves a device without one while another assignment would
//     give every device one, the assignments of steps 2 and 3 are
//     rearranged as little as needed (augmenting paths, in minor order).
//
// The same checkpoint and kernel devices always give the same mapping. A
// device left without one is a problem of the returned *DeviceMapError,
// which names it and says why.
func MapDevices(needs []DeviceNeed, targets []*uapi.DeviceInfo, explicit DeviceMap) (*DeviceMapping, error) {
	targets = slices.Clone(targets)
	slices.SortFunc(targets, func(a, b *uapi.DeviceInfo) int { return int(int64(a.Minor) - int64(b.Minor)) })
	n, m := len(needs), len(targets)
	assign := make([]int, n) // target index, -1 for none
	why := make([]string, n)
	owner := make([]int, m) // source index, -1 for free
	for i := range assign {
		assign[i] = -1
	}
	for j := range owner {
		owner[j] = -1
	}
	set := func(i, j int, w string) { assign[i], owner[j], why[i] = j, i, w }
	out := &DeviceMapping{}
	var probs []DeviceProblem
	problem := func(i int, format string, args ...any) {
		probs = append(probs, DeviceProblem{needs[i], fmt.Sprintf(format, args...)})
	}

	// 1. Explicit entries.
	explicitly := make([]bool, n)
	for _, e := range explicit {
		i := slices.IndexFunc(needs, func(nd DeviceNeed) bool {
			return e.From.ByGpuID && nd.Device.GpuId == e.From.GpuID || !e.From.ByGpuID && nd.Device.Minor == e.From.Minor
		})
		if i < 0 {
			out.Unused = append(out.Unused, e)
			continue
		}
		if explicitly[i] {
			problem(i, "%s maps it twice", DeviceMapSetting)
			continue
		}
		explicitly[i] = true
		j := slices.IndexFunc(targets, func(d *uapi.DeviceInfo) bool {
			return e.To.ByGpuID && d.GpuId == e.To.GpuID || !e.To.ByGpuID && d.Minor == e.To.Minor
		})
		switch {
		case j < 0:
			problem(i, "%s maps it to %s, which is none of the devices here (%s)", DeviceMapSetting, e.To, describeDevices(targets))
		case targets[j].Driver != needs[i].Device.Driver:
			problem(i, "%s maps it to renderD%d, an %s device, not %s", DeviceMapSetting, targets[j].Minor, targets[j].Driver, needs[i].Device.Driver)
		case !needs[i].fits(targets[j]):
			problem(i, "%s maps it to renderD%d, which has %s", DeviceMapSetting, targets[j].Minor, memoryOf(targets[j]))
		case owner[j] >= 0:
			problem(i, "%s maps it to renderD%d, as it maps renderD%d", DeviceMapSetting, targets[j].Minor, needs[owner[j]].Device.Minor)
		default:
			set(i, j, ByDeviceMap)
		}
	}

	// 2. Same minor.
	for i := range needs {
		if assign[i] >= 0 || explicitly[i] {
			continue
		}
		j := slices.IndexFunc(targets, func(d *uapi.DeviceInfo) bool { return d.Minor == needs[i].Device.Minor })
		if j >= 0 && owner[j] < 0 && needs[i].fits(targets[j]) {
			set(i, j, BySameMinor)
		}
	}

	// 3. First free device.
	for i := range needs {
		if assign[i] >= 0 || explicitly[i] {
			continue
		}
		for j, d := range targets {
			if owner[j] < 0 && needs[i].fits(d) {
				set(i, j, ByFirstFree)
				break
			}
		}
	}

	// 4. Rearrange: an augmenting path from each device left without
	// one, through assignments that are not explicit.
	var augment func(i int, seen []bool) bool
	augment = func(i int, seen []bool) bool {
		for j, d := range targets {
			if seen[j] || !needs[i].fits(d) {
				continue
			}
			seen[j] = true
			if k := owner[j]; k < 0 || !explicitly[k] && augment(k, seen) {
				set(i, j, ByRearranging)
				return true
			}
		}
		return false
	}
	for i := range needs {
		if assign[i] >= 0 || explicitly[i] {
			continue
		}
		augment(i, make([]bool, m)) // the devices it moves say so
	}

	// Whoever has no device now cannot be mapped; say why.
	for i, nd := range needs {
		if assign[i] >= 0 || explicitly[i] {
			continue
		}
		var same, big []string
		for j, d := range targets {
			switch {
			case d.Driver != nd.Device.Driver:
			case !nd.fits(d):
				same = append(same, fmt.Sprintf("renderD%d has %s", d.Minor, memoryOf(d)))
			case owner[j] >= 0:
				big = append(big, fmt.Sprintf("renderD%d by renderD%d", d.Minor, needs[owner[j]].Device.Minor))
			}
		}
		switch {
		case len(same) == 0 && len(big) == 0:
			problem(i, "there is no %s device here (%s)", nd.Device.Driver, describeDevices(targets))
		case len(big) == 0:
			problem(i, "no %s device here has enough memory: %s", nd.Device.Driver, strings.Join(same, ", "))
		default:
			problem(i, "every %s device here with enough memory is taken: %s", nd.Device.Driver, strings.Join(big, ", "))
		}
	}
	if len(probs) > 0 {
		return nil, &DeviceMapError{Problems: probs}
	}
	for i, nd := range needs {
		out.Assignments = append(out.Assignments, DeviceAssignment{DeviceNeed: nd, To: targets[assign[i]], Why: why[i]})
	}
	return out, nil
}

func memoryOf(d *uapi.DeviceInfo) string {
	return fmt.Sprintf("%s of VRAM and %s of GTT", units.Format(d.VramSize), units.Format(d.GttSize))
}

func describeDevices(ds []*uapi.DeviceInfo) string {
	if len(ds) == 0 {
		return "no device at all"
	}
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("renderD%d %s", d.Minor, d.Driver))
	}
	return strings.Join(s, ", ")
}
