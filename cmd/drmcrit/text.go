package main

import (
	"strings"
	"unicode"
)

// plainText makes a message, often from a library, one line of plain
// text: protobuf's errors put a no-break space (U+00A0) after "proto:" on
// purpose, so that nobody compares their text, but drmcrit prints one
// problem per line with plain spaces, and other invisible characters as
// U+FFFD.
func plainText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r):
			return ' '
		case !unicode.IsPrint(r):
			return unicode.ReplacementChar
		}
		return r
	}, s)
}
