package agent

import (
	"os"
	"testing"
)

func TestReadOnlyMapping(t *testing.T) {
	const exe = "/usr/local/bin/anvil"
	tests := []struct {
		line   string
		lo, hi uintptr
		ok     bool
	}{
		{"00400000-01697000 r-xp 00000000 fe:00 9981751    /usr/local/bin/anvil", 0x400000, 0x1697000, true},
		{"01697000-02ab0000 r--p 01297000 fe:00 9981751    /usr/local/bin/anvil", 0x1697000, 0x2ab0000, true},
		{"02ab0000-02b42000 rw-p 026b0000 fe:00 9981751    /usr/local/bin/anvil", 0, 0, false},
		{"02b42000-04b92000 rw-p 00000000 00:00 0", 0, 0, false},
		{"7f6ae6d43000-7f6ae6d69000 r--p 00000000 fe:00 326269   /usr/lib/x86_64-linux-gnu/libc.so.6", 0, 0, false},
		{"00400000-01697000 r-xp 00000000 fe:00 1   /usr/local/bin/anvil (deleted)", 0, 0, false},
		{"garbage", 0, 0, false},
	}
	for _, tt := range tests {
		lo, hi, ok := readOnlyMapping(tt.line, exe)
		if ok != tt.ok || lo != tt.lo || hi != tt.hi {
			t.Errorf("readOnlyMapping(%q) = %x, %x, %v", tt.line, lo, hi, ok)
		}
	}
	// A path with spaces is matched whole.
	if _, _, ok := readOnlyMapping("00400000-01697000 r-xp 00000000 fe:00 1   /opt/my dir/anvil", "/opt/my dir/anvil"); !ok {
		t.Error("a path with a space")
	}
}

// TestReleaseStartupPages runs the release on this test binary: the
// process keeps working (this test goes on), and its file-backed RSS does
// not grow.
func TestReleaseStartupPages(t *testing.T) {
	before, err := ReadMemoryUsage(0)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ReleaseStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	if n <= 0 {
		t.Fatal("nothing released")
	}
	after, err := ReadMemoryUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("advised %d MiB; RSS %d → %d KiB (file %d → %d KiB)", n>>20, before.RSS>>10, after.RSS>>10, before.File>>10, after.File>>10)
	if after.File > before.File {
		t.Errorf("file-backed RSS grew: %d → %d", before.File, after.File)
	}
	if after.RSS <= 0 || after.Peak < after.RSS {
		t.Errorf("usage %+v", after)
	}
}
