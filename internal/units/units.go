// Package units parses the quantities the commands take on their command
// lines.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize reads a byte count: an unsigned integer as strconv.ParseUint
// reads it with base 0 (decimal, or 0x, 0o, 0b or 0 prefixed), optionally
// followed by a K, M, G or T suffix (powers of 1024). A product that
// does not fit in 64 bits is an error.
func ParseSize(s string) (uint64, error) {
	mult, suffix := uint64(1), ""
	switch {
	case strings.HasSuffix(s, "K"):
		mult, suffix, s = 1<<10, "K", strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, suffix, s = 1<<20, "M", strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, suffix, s = 1<<30, "G", strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "T"):
		mult, suffix, s = 1<<40, "T", strings.TrimSuffix(s, "T")
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, err
	}
	if n > math.MaxUint64/mult {
		return 0, fmt.Errorf("size %s%s does not fit in 64 bits", s, suffix)
	}
	return n * mult, nil
}

// Format writes a byte count for people: bytes below 1 KiB, else the
// largest binary unit below it (KiB, MiB, GiB, TiB) to one decimal.
func Format(n uint64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d bytes", n)
	}
	f, unit := float64(n)/(1<<10), "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if f < 1<<10 {
			break
		}
		f, unit = f/(1<<10), u
	}
	return fmt.Sprintf("%.1f %s", f, unit)
}
