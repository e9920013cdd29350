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
