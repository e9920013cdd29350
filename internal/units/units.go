// Package units parses the quantities the commands take on their command
// lines.
package units

import (
	"strconv"
	"strings"
)

// ParseSize reads a byte count: an unsigned integer as strconv.ParseUint
// reads it with base 0 (decimal, or 0x, 0o, 0b or 0 prefixed), optionally
// followed by a K, M, G or T suffix (powers of 1024). The product is not
// checked for overflow.
func ParseSize(s string) (uint64, error) {
	mult := uint64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	case strings.HasSuffix(s, "T"):
		mult, s = 1<<40, strings.TrimSuffix(s, "T")
	}
	n, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		return 0, err
	}
	return n * mult, nil
}
