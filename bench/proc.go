package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// maxCommLen is the longest command name /proc/<pid>/comm holds
// (TASK_COMM_LEN less the terminating NUL); longer names are truncated.
const maxCommLen = 15

// clockTicks is the unit of the CPU times in /proc/<pid>/stat
// (sysconf(_SC_CLK_TCK)), 100 on every Linux architecture Go supports.
const clockTicks = 100

// procSample is one reading of a process's memory and CPU time.
type procSample struct {
	rss int64   // resident set size, bytes
	cpu float64 // user + system CPU time so far, seconds
}

// readProc reads /proc/<pid>/status (VmRSS) and /proc/<pid>/stat (utime
// and stime). It works on Linux only.
func readProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read the memory of process %d: %w", pid, err)
	}
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest)) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err == nil {
					s.rss = kb << 10
				}
			}
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read the CPU time of process %d: %w", pid, err)
	}
	st, err := parseStat(stat)
	if err != nil {
		return s, fmt.Errorf("read the CPU time of process %d: %w", pid, err)
	}
	s.cpu = st.cpu
	return s, nil
}

// statFields are the fields of /proc/<pid>/stat that bench uses.
type statFields struct {
	cpu   float64 // utime + stime, seconds
	start int64   // starttime, clock ticks after boot: tells a reused pid
}

// parseStat reads utime, stime and starttime (fields 14, 15 and 22) from
// the text of /proc/<pid>/stat.
func parseStat(stat []byte) (statFields, error) {
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after its closing one, so field n is f[n-3].
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return statFields{}, errors.New("unexpected /proc/<pid>/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return statFields{}, fmt.Errorf("/proc/<pid>/stat has %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	start, err3 := strconv.ParseInt(f[19], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return statFields{}, err
	}
	return statFields{cpu: float64(utime+stime) / clockTicks, start: start}, nil
}

// listenerPID returns the id of the process that listens on the TCP port,
// from the LISTEN sockets in /proc/net/tcp and tcp6 and the socket links
// in /proc/<pid>/fd. It needs permission to read the other process's fd
// directory (the same user, or root).
func listenerPID(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || fl[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, portHex, ok := strings.Cut(fl[1], ":")
			p, err := strconv.ParseUint(portHex, 16, 16)
			if ok && err == nil && int(p) == port && fl[9] != "0" {
				inodes["socket:["+fl[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no process listens on port %d (per /proc/net/tcp)", port)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/fd")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(d)
		if err != nil {
			continue // another user's process, or gone
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(d, fd.Name())); err == nil && inodes[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("cannot tell which process listens on port %d (pass --pid)", port)
}

// loadAverage returns the 1-minute load average from /proc/loadavg, or -1.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// groupWatch sums the CPU time of every process whose command name
// (/proc/<pid>/comm) is name, such as PostgreSQL's postmaster, its
// background processes and one backend per connection. Each sample lists
// /proc, reads the name of each process it has not seen yet, and the CPU
// time (utime + stime in /proc/<pid>/stat, which anyone may read) of each
// matching one.
//
// The sum is an approximation, from samples: a process running when the
// watch starts counts from then; one that appears later counts from its
// start, as all its CPU time falls in the window; one that exits counts up
// to the last sample that saw it, so whatever it used after that sample
// is missed, as is a process that lives and dies between two samples. For
// a connection pool's long-lived backends both are small. A process that
// is renamed after it was first seen keeps its first verdict.
type groupWatch struct {
	name  string
	began time.Time
	// procs holds the matching processes seen, by pid and start time, so
	// a reused pid is a new process.
	procs map[procKey]*groupProc
	// live maps each pid seen in the last listing to its process's key
	// (matching or not), so only new pids are read.
	live map[int]procKey
	err  error // /proc unreadable
}

type procKey struct {
	pid   int
	start int64
}

// groupProc is one matching process: its CPU time when first seen (0 when
// it started after the watch did) and at the last sample that saw it.
type groupProc struct {
	base, last float64
}

// newGroupWatch starts watching the processes named name: those running now
// count from now.
func newGroupWatch(name string) *groupWatch {
	w := &groupWatch{name: name, began: time.Now(), procs: map[procKey]*groupProc{}, live: map[int]procKey{}}
	w.scan(true)
	return w
}

// scan lists /proc once. first marks the processes found as running when
// the watch started.
func (w *groupWatch) scan(first bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		w.err = fmt.Errorf("list processes: %w", err)
		return
	}
	seen := make(map[int]procKey, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		old, known := w.live[pid]
		if known && w.procs[old] == nil {
			// Another program, seen before: a pid is not reused within a
			// sample's interval, so it is the same one.
			seen[pid] = old
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone since the listing
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		key := procKey{pid, st.start}
		seen[pid] = key
		if p := w.procs[key]; known && old == key && p != nil {
			p.last = st.cpu
			continue
		}
		// A process not seen before: read its name once.
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			delete(seen, pid) // gone: try again if the pid is listed again
			continue
		}
		if strings.TrimSuffix(string(comm), "\n") == w.name {
			p := &groupProc{last: st.cpu}
			if first {
				p.base = st.cpu
			}
			w.procs[key] = p
		}
	}
	w.live = seen
}

func (w *groupWatch) sample() {
	if w.err == nil {
		w.scan(false)
	}
}

// finish takes a last sample and returns the group's CPU use since the
// watch started, or an error when /proc could not be read or no process
// had the name.
func (w *groupWatch) finish() (*CPUUse, error) {
	w.sample()
	if w.err != nil {
		return nil, w.err
	}
	if len(w.procs) == 0 {
		return nil, fmt.Errorf("no process named %q ran (the name as /proc/<pid>/comm shows it)", w.name)
	}
	u := &CPUUse{Name: w.name, Processes: len(w.procs)}
	for _, p := range w.procs {
		u.CPUSeconds += p.last - p.base
	}
	if wall := time.Since(w.began).Seconds(); wall > 0 {
		u.CPUCores = u.CPUSeconds / wall
	}
	return u, nil
}

// hostCPU returns the busy CPU time of the whole machine so far, in
// seconds summed over every CPU, from the first line of /proc/stat: user,
// nice, system, irq, softirq and steal (guest time is part of user).
func hostCPU() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected first line in /proc/stat")
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system [idle iowait] irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += n
	}
	return float64(busy) / clockTicks, nil
}

// runDelay is the time the process's threads have spent runnable but
// waiting for a CPU, summed over its threads alive now, in seconds (the
// second field of /proc/<pid>/task/*/schedstat); 0 where it is not
// available. On a machine whose cores are shared it says how much of a
// run's time went to waiting for a turn rather than to work or I/O.
func runDelay(pid int) float64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns float64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				ns += v
			}
		}
	}
	return ns / 1e9
}
