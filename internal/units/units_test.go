package units

import "testing"

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"0x1000", 4096, true},
		{"16K", 16 << 10, true},
		{"256M", 256 << 20, true},
		{"1G", 1 << 30, true},
		{"2T", 2 << 40, true},
		{"0x10K", 16 << 10, true},
		{"", 0, false},
		{"K", 0, false},
		{"1k", 0, false},
		{"1KB", 0, false},
		{"-1", 0, false},
		{"1.5M", 0, false},
		{"16383P", 0, false},
		{"16777215T", 16777215 << 40, true},
		{"16777216T", 0, false},
		{"0xffffffffffffffff", 1<<64 - 1, true},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 bytes", 1023: "1023 bytes", 1024: "1.0 KiB", 266240: "260.0 KiB",
		3 << 20: "3.0 MiB", 1<<30 + 1<<29: "1.5 GiB", 5 << 40: "5.0 TiB", 1<<64 - 1: "16777216.0 TiB",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
