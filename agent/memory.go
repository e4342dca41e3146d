package agent

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The agent runs on every node, so its footprint is budgeted (≤ 20 MiB
// RSS). It shares the anvil binary with etcd, client-go and the
// installer, and Go runs every linked package's init at start, whatever
// the subcommand: that touches pages of code and read-only data all over
// a ~90 MB executable, and the kernel maps at least 64 KiB around each
// fault (fault-around), a whole large folio of the page cache where the
// file was read in large folios. Measured, that is ~45 MiB of
// file-backed RSS the agent never touches again, against ~8 MiB of heap
// and stacks. So the agent:
//
//   - keeps the heap small and collected often (GOGC 50, a 24 MiB soft
//     limit), unless the operator set GOGC or GOMEMLIMIT;
//   - does not sample allocations for a heap profile nobody reads (each
//     sample unwinds the allocating stack through the function table);
//   - once registered, drops its mappings of the executable's read-only
//     segments (madvise MADV_DONTNEED), marks them MADV_RANDOM and drops
//     what no other process maps from the page cache, so only the pages
//     the heartbeat loops use come back, one at a time. Measured by
//     BenchmarkAgentRSS (kernel 6.18, the binary also mapped by etcd and
//     the supervisor on the same machine): a steady 26 MiB, against 30 MiB
//     when the pages came back as the folios they were cached in. Of the
//     ~18 MiB file-backed that remain, a minute after registration,
//     about 7 MiB are the function table (.gopclntab), 6.5 MiB read-only
//     data and 4.5 MiB code.
const (
	agentGCPercent   = 50
	agentMemoryLimit = 24 << 20
)

// TuneMemory sets the agent's garbage-collector targets unless the
// environment already does, and turns off heap-profile sampling.
func TuneMemory() {
	runtime.MemProfileRate = 0
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(agentMemoryLimit)
	}
}

// ReleaseStartupPages drops this process's mappings of the read-only
// segments of its own executable (code and read-only data), so the pages
// only init needed stop counting in its RSS; whatever runs next faults
// its pages back from the page cache. Writable mappings are never
// touched. It returns how many bytes of mappings it advised.
func ReleaseStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	debug.FreeOSMemory()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	s := bufio.NewScanner(f)
	for s.Scan() {
		lo, hi, ok := readOnlyMapping(s.Text(), exe)
		if !ok {
			continue
		}
		// The range comes from the kernel's own list of this process's
		// mappings, so it is mapped and page-aligned; the raw syscall takes
		// it as it is, without making Go pointers of addresses.
		for _, advice := range []uintptr{unix.MADV_RANDOM, unix.MADV_DONTNEED} {
			if _, _, e := unix.Syscall(unix.SYS_MADVISE, lo, hi-lo, advice); e != 0 {
				return total, fmt.Errorf("madvise %x-%x: %w", lo, hi, e)
			}
		}
		total += int64(hi - lo)
	}
	if err := s.Err(); err != nil {
		return total, err
	}
	// What no process maps any more leaves the page cache, so the pages
	// the agent faults back come in one by one (MADV_RANDOM: no
	// read-around) instead of as the large folios the first read made, each
	// of which the kernel maps whole. Pages other processes map (etcd on a
	// master) stay.
	exeFile, err := os.Open("/proc/self/exe")
	if err != nil {
		return total, err
	}
	defer exeFile.Close()
	if err := unix.Fadvise(int(exeFile.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return total, fmt.Errorf("fadvise %s: %w", exe, err)
	}
	return total, nil
}

// readOnlyMapping parses one line of /proc/self/maps and reports the range
// of a non-writable mapping of the file exe.
func readOnlyMapping(line, exe string) (lo, hi uintptr, ok bool) {
	f := strings.Fields(line)
	if len(f) < 6 || strings.Join(f[5:], " ") != exe || len(f[1]) < 2 || f[1][1] == 'w' {
		return 0, 0, false
	}
	a, b, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(a, 16, 64)
	y, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || y <= x {
		return 0, 0, false
	}
	return uintptr(x), uintptr(y), true
}

// MemoryUsage is a process's resident memory from /proc/PID/status.
type MemoryUsage struct {
	RSS, Anon, File, Peak int64
}

// ReadMemoryUsage reads /proc/PID/status (pid 0: this process).
func ReadMemoryUsage(pid int) (MemoryUsage, error) {
	p := "/proc/self/status"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/status"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return MemoryUsage{}, err
	}
	var m MemoryUsage
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		n *= 1024
		switch k {
		case "VmRSS":
			m.RSS = n
		case "RssAnon":
			m.Anon = n
		case "RssFile":
			m.File = n
		case "VmHWM":
			m.Peak = n
		}
	}
	return m, nil
}
