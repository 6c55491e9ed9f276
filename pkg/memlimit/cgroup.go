// Package memlimit finds the memory limit the kernel holds this process
// to: the cgroup's memory.max (cgroup v2) or memory.limit_in_bytes
// (cgroup v1), of the process's own cgroup and every cgroup above it. It
// resolves the process's cgroup through /proc/self/cgroup and
// /proc/self/mountinfo, and falls back to the common /sys/fs/cgroup
// layout. ingest sizes its memory budget from it (pkg/ingest, memory.go).
//
// The file system is an fs.FS rooted at "/" so that tests read fake trees.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"strconv"
	"strings"
)

// unlimitedV1 is the smallest memory.limit_in_bytes cgroup v1 reports for
// "no limit": the kernel writes LONG_MAX rounded down to a page
// (9223372036854771712); anything this large is no limit.
const unlimitedV1 = math.MaxInt64 / 2

// Limit is a cgroup memory limit that applies to the process.
type Limit struct {
	// Bytes is the limit: the smallest of the cgroup's and its ancestors'.
	Bytes int64
	// File is the file the limit was read from ("/sys/fs/cgroup/memory.max").
	File string
}

// Root is the real file system, for Detect.
func Root() fs.FS { return os.DirFS("/") }

// Detect returns the cgroup memory limit that applies to the process, and
// false when none does (no cgroup file system, or "max"/unlimited all the
// way up). root is the file system at "/". An error means a file that
// should say was there but could not be read or understood.
func Detect(root fs.FS) (Limit, bool, error) {
	dirs, err := cgroupDirs(root)
	if err != nil {
		return Limit{}, false, err
	}
	for _, d := range dirs {
		lim, ok, err := walkUp(root, d)
		if err != nil || ok {
			return lim, ok, err
		}
	}
	return Limit{}, false, nil
}

// cgroupDir is the directory of the process's memory cgroup, and how far up
// to walk: top is the mount point of the hierarchy.
type cgroupDir struct {
	dir, top string
	// file is memory.max (v2) or memory.limit_in_bytes (v1).
	file string
}

// cgroupDirs finds the process's memory cgroup directories: the v1 memory
// controller's first (in a hybrid layout it is the one that limits memory),
// then the v2 unified one.
func cgroupDirs(root fs.FS) ([]cgroupDir, error) {
	paths, err := readProcCgroup(root)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, nil
	}
	// Without mountinfo, the hierarchies are looked for where they are
	// commonly mounted.
	mounts, err := readMountinfo(root)
	haveMounts := err == nil
	var out []cgroupDir
	for _, v := range []struct {
		v1   bool
		file string
		def  string
	}{{true, "memory.limit_in_bytes", "sys/fs/cgroup/memory"}, {false, "memory.max", "sys/fs/cgroup"}} {
		p, ok := paths[v.v1]
		if !ok {
			continue
		}
		top, rel := v.def, p
		if m, ok := findMount(mounts, v.v1); ok {
			top, rel = m.point, relTo(p, m.root)
		} else if haveMounts {
			continue // this hierarchy is not mounted here
		}
		out = append(out, cgroupDir{dir: path.Join(top, rel), top: top, file: v.file})
	}
	return out, nil
}

// readProcCgroup reads /proc/self/cgroup: the process's cgroup path in the
// v1 memory hierarchy (key true) and in the v2 unified one (key false).
func readProcCgroup(root fs.FS) (map[bool]string, error) {
	data, err := fs.ReadFile(root, "proc/self/cgroup")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no cgroups (not Linux, or no /proc)
	}
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	out := map[bool]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, ok1 := strings.Cut(sc.Text(), ":")
		ctrls, p, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			continue
		}
		switch {
		case id == "0" && ctrls == "":
			out[false] = p
		case hasWord(ctrls, ",", "memory"):
			out[true] = p
		}
	}
	return out, nil
}

// mount is a cgroup file system mount from /proc/self/mountinfo.
type mount struct {
	v1          bool
	root, point string
	options     string
}

// readMountinfo lists the cgroup mounts (v1 with the memory controller, and
// v2) of /proc/self/mountinfo.
func readMountinfo(root fs.FS) ([]mount, error) {
	data, err := fs.ReadFile(root, "proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// id parent major:minor root mount-point options [optional…] - fstype source super-options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 1 {
			continue
		}
		m := mount{root: unescape(f[3]), point: strings.TrimPrefix(unescape(f[4]), "/")}
		switch g[0] {
		case "cgroup2":
		case "cgroup":
			if len(g) < 3 || !hasWord(g[2], ",", "memory") {
				continue
			}
			m.v1 = true
		default:
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// findMount is the mount of the v1 memory hierarchy or of the v2 one.
func findMount(ms []mount, v1 bool) (mount, bool) {
	for _, m := range ms {
		if m.v1 == v1 {
			return m, true
		}
	}
	return mount{}, false
}

// relTo is the cgroup path p relative to the mount's root: a container's
// mount shows its own cgroup as the root. A path outside the root (the
// process's cgroup is not under what is mounted) leaves the mount point.
func relTo(p, root string) string {
	if strings.Contains(p, "..") {
		return "/"
	}
	if root == "/" {
		return p
	}
	if p == root {
		return "/"
	}
	if strings.HasPrefix(p, root+"/") {
		return strings.TrimPrefix(p, root)
	}
	return "/"
}

// walkUp reads the limit file in d.dir and each directory above it up to
// d.top, and returns the smallest limit set.
func walkUp(root fs.FS, d cgroupDir) (Limit, bool, error) {
	var best Limit
	found := false
	for dir := d.dir; ; dir = path.Dir(dir) {
		name := path.Join(dir, d.file)
		n, ok, err := readLimit(root, name)
		if err != nil {
			return Limit{}, false, err
		}
		if ok && (!found || n < best.Bytes) {
			best, found = Limit{Bytes: n, File: "/" + name}, true
		}
		if dir == d.top || dir == "." || dir == "/" || !strings.HasPrefix(dir, d.top) {
			break
		}
	}
	return best, found, nil
}

// readLimit reads one memory.max or memory.limit_in_bytes; a missing file
// (the cgroup has no memory controller there) or "max" is no limit.
func readLimit(root fs.FS, name string) (int64, bool, error) {
	data, err := fs.ReadFile(root, name)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read cgroup memory limit /%s: %w", name, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("cgroup memory limit /%s: %q is not a number of bytes", name, s)
	}
	if n >= unlimitedV1 {
		return 0, false, nil
	}
	return n, true, nil
}

// hasWord reports whether the sep-separated list holds w.
func hasWord(list, sep, w string) bool {
	for _, x := range strings.Split(list, sep) {
		if x == w {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
