package images

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"lukechampine.com/blake3"

	"drmcr/kernelsim/uapi"
)

// Every image of a dump is sealed: the inventory lists each other image
// but the pages files with its size and digest (the index checksums every
// chunk of the pages files), and seals itself with a digest of its own
// encoding without the seal field. A restore checks the seals before it
// uses anything: an image edited after the dump, even into a state that
// is consistent in itself (a GEM handle renumbered everywhere in its
// file), no longer matches the process memory criu restores with it, and
// is refused. `drmcrit encode --reseal` re-seals an image edited on
// purpose (Reseal).

// SealAlgorithm names the digest of seals: BLAKE3-256, cryptographic
// whatever the chunks' checksum.
var SealAlgorithm = uapi.BLAKE3.String()

// sealField is Inventory.seal's field number: the self-seal is computed
// over the inventory's encoding with every occurrence of it left out.
const sealField protowire.Number = 11

// Digest is the seal digest of an image's bytes.
func Digest(data []byte) []byte { return uapi.BLAKE3.Sum(data) }

// newDigest returns a streaming digest equal to Digest.
func newDigest() hash.Hash { return blake3.New(uapi.BLAKE3.Size(), nil) }

// SealOf is the seal of an image with these bytes.
func SealOf(name string, data []byte) *ImageSeal {
	return &ImageSeal{Name: name, Size: uint64(len(data)), Digest: Digest(data)}
}

// Problem is one reason a checkpoint cannot be restored.
type Problem struct {
	Image string // the image's file name
	// Field is where in the image: a path into its message
	// ("state.mappings[2].va"), or a record of the index; "" for the
	// image as a whole.
	Field string
	Msg   string
}

func (p Problem) String() string {
	if p.Field == "" {
		return p.Image + ": " + p.Msg
	}
	return p.Image + ": " + p.Field + ": " + p.Msg
}

// Problemf makes a Problem.
func Problemf(image, field, format string, args ...any) Problem {
	return Problem{Image: image, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// resealHint tells how an image edited on purpose is made acceptable.
const resealHint = "(drmcrit encode --reseal re-seals an image edited on purpose)"

// CheckSeal compares what an image is (size bytes with this digest) with
// the seal the inventory recorded for it.
func CheckSeal(name string, seal *ImageSeal, size uint64, digest []byte) []Problem {
	if seal == nil {
		return []Problem{Problemf(name, "", "not sealed: %s records no size and digest for it, so it cannot be told from an image written after the dump", InventoryName)}
	}
	var diffs []string
	if size != seal.Size {
		diffs = append(diffs, fmt.Sprintf("it has %d bytes, the dump wrote %d", size, seal.Size))
	}
	if !bytes.Equal(digest, seal.Digest) {
		diffs = append(diffs, fmt.Sprintf("its %s digest is %s, the dump's was %s", SealAlgorithm, short(digest), short(seal.Digest)))
	}
	if diffs == nil {
		return nil
	}
	return []Problem{Problemf(name, "", "changed after the dump: %s (sealed in %s) %s", strings.Join(diffs, "; "), InventoryName, resealHint)}
}

// short prints a digest's first bytes.
func short(d []byte) string {
	if len(d) == 0 {
		return "empty"
	}
	return hex.EncodeToString(d[:min(len(d), 8)]) + "…"
}

// splitSeal returns an inventory's encoding without its seal field, and
// the seal (the last occurrence, as protobuf decoding takes it).
func splitSeal(data []byte) (rest, seal []byte, found bool, err error) {
	rest = make([]byte, 0, len(data))
	for b := data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, false, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, false, protowire.ParseError(m)
		}
		if num == sealField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b[n:])
			seal, found = v, true
		} else {
			rest = append(rest, b[:n+m]...)
		}
		b = b[n+m:]
	}
	return rest, seal, found, nil
}

// SealInventory encodes the inventory with its seal: the digest of its
// encoding without the seal field, which is then appended. It sets
// inv.SealAlgorithm and inv.Seal.
func SealInventory(inv *Inventory) ([]byte, error) {
	inv.SealAlgorithm = SealAlgorithm
	inv.Seal = nil
	data, err := proto.Marshal(inv)
	if err != nil {
		return nil, fmt.Errorf("encode image %s: %w", InventoryName, err)
	}
	inv.Seal = Digest(data)
	data = protowire.AppendTag(data, sealField, protowire.BytesType)
	return protowire.AppendBytes(data, inv.Seal), nil
}

// WriteInventory writes the inventory, sealed.
func (d *Dir) WriteInventory(inv *Inventory) error {
	data, err := SealInventory(inv)
	if err != nil {
		return err
	}
	return d.WriteBytes(InventoryName, data)
}

// ReadInventory reads the inventory and checks its version and its own
// seal. A seal that is missing or does not match is a problem (the
// inventory is still returned, for tools that report everything); an
// inventory that cannot be read or decoded is an error.
func (d *Dir) ReadInventory() (*Inventory, []Problem, error) {
	data, err := d.ReadBytes(InventoryName)
	if err != nil {
		return nil, nil, err
	}
	inv := &Inventory{}
	if err := Decode(InventoryName, data, inv); err != nil {
		return nil, nil, err
	}
	return inv, CheckInventorySeal(data), nil
}

// CheckInventorySeal checks an inventory's encoding against its own seal.
func CheckInventorySeal(data []byte) []Problem {
	rest, seal, found, err := splitSeal(data)
	switch {
	case err != nil:
		return []Problem{Problemf(InventoryName, "seal", "the encoding cannot be split: %v", err)}
	case !found || len(seal) == 0:
		return []Problem{Problemf(InventoryName, "seal", "not sealed: nothing shows that the inventory, and the seals of the other images in it, are what the dump wrote")}
	}
	inv := &Inventory{}
	if err := proto.Unmarshal(data, inv); err == nil && inv.SealAlgorithm != SealAlgorithm {
		return []Problem{Problemf(InventoryName, "seal_algorithm", "%q, this plugin seals with %q", inv.SealAlgorithm, SealAlgorithm)}
	}
	if got := Digest(rest); !bytes.Equal(got, seal) {
		return []Problem{Problemf(InventoryName, "seal", "changed after the dump: the %s digest of its encoding is %s, its seal says %s %s", SealAlgorithm, short(got), short(seal), resealHint)}
	}
	return nil
}

// Seals indexes an inventory's image seals by name. A name sealed twice
// maps to nil: neither seal can be trusted to be the dump's.
func Seals(inv *Inventory) map[string]*ImageSeal {
	m := make(map[string]*ImageSeal, len(inv.Images))
	for _, s := range inv.Images {
		if _, dup := m[s.Name]; dup {
			m[s.Name] = nil
			continue
		}
		m[s.Name] = s
	}
	return m
}

// SealFile computes the seal of an image of the directory as it is now,
// reading it in a stream (the index has no size limit).
func (d *Dir) SealFile(name string) (*ImageSeal, error) {
	f, err := d.OpenRegular(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := newDigest()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", name, err)
	}
	return &ImageSeal{Name: name, Size: uint64(n), Digest: h.Sum(nil)}, nil
}

// Reseal records in the directory's inventory the size and digest that
// image name has now, and re-seals the inventory: for an image edited on
// purpose, which a restore would refuse otherwise. Resealing the
// inventory itself only renews its own seal.
func (d *Dir) Reseal(name string) error {
	inv := &Inventory{}
	if err := d.Read(InventoryName, inv); err != nil {
		return fmt.Errorf("reseal %s: %w", name, err)
	}
	if name != InventoryName {
		switch KindOf(name) {
		case KindFile, KindChannel, KindDmaBuf, KindIndex:
		default:
			return fmt.Errorf("reseal %s: only drm-file, drm-channel, drm-dmabuf and index images are sealed in the inventory (pages files are checked chunk by chunk by the index)", name)
		}
		s, err := d.SealFile(name)
		if err != nil {
			return fmt.Errorf("reseal %s: %w", name, err)
		}
		inv.Images = slices.DeleteFunc(inv.Images, func(x *ImageSeal) bool { return x.Name == name })
		inv.Images = append(inv.Images, s)
		slices.SortFunc(inv.Images, func(a, b *ImageSeal) int { return strings.Compare(a.Name, b.Name) })
	}
	return d.WriteInventory(inv)
}
