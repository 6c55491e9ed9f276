package helm

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// podFS lays out under root the files one container of a pod sees, as the
// kubelet mounts them: each ConfigMap and Secret volume with its items (all
// keys without), each file with its mode (item mode, else defaultMode,
// else 0644; with a pod fsGroup the kubelet adds 0440 and gives the file
// that group); emptyDir and PVC volumes as empty writable directories. A
// key missing from its ConfigMap or Secret is an error, as it keeps the
// pod from starting.
type podFS struct {
	root   string
	mounts []corev1.VolumeMount
}

func layOut(root string, pod corev1.PodSpec, c corev1.Container, cms map[string]*corev1.ConfigMap, s secrets) (*podFS, error) {
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	var fsGroup *int64
	if pod.SecurityContext != nil {
		fsGroup = pod.SecurityContext.FSGroup
	}
	pfs := &podFS{root: root, mounts: c.VolumeMounts}
	for _, m := range c.VolumeMounts {
		dir := filepath.Join(root, m.MountPath)
		v, ok := volumes[m.Name]
		if !ok {
			// A volumeClaimTemplate of a StatefulSet.
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			continue
		}
		switch {
		case v.ConfigMap != nil:
			cm, ok := cms[v.ConfigMap.Name]
			if !ok {
				return nil, fmt.Errorf("volume %s: ConfigMap %q is not rendered", v.Name, v.ConfigMap.Name)
			}
			data := map[string]string{}
			for k, val := range cm.Data {
				data[k] = val
			}
			if err := writeItems(dir, "ConfigMap "+cm.Name, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode, fsGroup, false); err != nil {
				return nil, err
			}
		case v.Secret != nil:
			files, ok := s[v.Secret.SecretName]
			if !ok {
				return nil, fmt.Errorf("volume %s: Secret %q is not created by configure's script (Secrets: %s)", v.Name, v.Secret.SecretName, names(s))
			}
			data := map[string]string{}
			for k, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					return nil, fmt.Errorf("Secret %s key %s: %w", v.Secret.SecretName, k, err)
				}
				data[k] = string(b)
			}
			if err := writeItems(dir, "Secret "+v.Secret.SecretName, data, v.Secret.Items, v.Secret.DefaultMode, fsGroup, true); err != nil {
				return nil, err
			}
		case v.EmptyDir != nil, v.PersistentVolumeClaim != nil:
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("volume %s: a kind the test does not lay out", v.Name)
		}
	}
	return pfs, nil
}

func writeItems(dir, what string, data map[string]string, items []corev1.KeyToPath, defaultMode *int32, fsGroup *int64, secret bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(items) == 0 {
		for k := range data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %q: the pod would not start (couldn't find key %s)", what, it.Key, it.Key)
		}
		mode := fs.FileMode(0o644)
		if defaultMode != nil {
			mode = fs.FileMode(*defaultMode)
		}
		if it.Mode != nil {
			mode = fs.FileMode(*it.Mode)
		}
		if fsGroup != nil {
			mode |= 0o440 // the kubelet's read-only mask for fsGroup
		} else if secret && mode&0o004 == 0 {
			return fmt.Errorf("%s key %s: mode %04o, root-owned, and no fsGroup: a non-root pod cannot read it", what, it.Key, mode)
		}
		path := filepath.Join(dir, it.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(val), 0o600); err != nil {
			return err
		}
		if err := os.Chmod(path, mode); err != nil {
			return err
		}
	}
	return nil
}

func names(s secrets) string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// path is where the container's path p lies under root.
func (p *podFS) path(in string) string { return filepath.Join(p.root, in) }

// loadTOML loads the container's TOML (FDFWD_CONFIG) with pkg/config for
// cmd, the paths it names moved under root: every file a key names must
// then exist in a mount, credentials with the mode a Secret gets.
func (p *podFS) loadTOML(c corev1.Container, cmd config.Command) (*config.Config, error) {
	cfgPath := ""
	for _, e := range c.Env {
		if e.Name == "FDFWD_CONFIG" {
			cfgPath = e.Value
		}
	}
	if cfgPath == "" {
		return nil, fmt.Errorf("container %s sets no FDFWD_CONFIG", c.Name)
	}
	data, err := os.ReadFile(p.path(cfgPath))
	if err != nil {
		return nil, fmt.Errorf("FDFWD_CONFIG %s is not in a mounted volume: %w", cfgPath, err)
	}
	text := string(data)
	for _, m := range p.mounts {
		text = strings.ReplaceAll(text, `"`+m.MountPath+`/`, `"`+p.path(m.MountPath)+`/`)
		text = strings.ReplaceAll(text, `"`+m.MountPath+`"`, `"`+p.path(m.MountPath)+`"`)
	}
	moved := p.path(cfgPath) + ".test.toml"
	if err := os.WriteFile(moved, []byte(text), 0o600); err != nil {
		return nil, err
	}
	return config.LoadFile(moved, cmd)
}

// unrooted is a path of the loaded configuration as the container sees it.
func (p *podFS) unrooted(path string) string {
	rel, err := filepath.Rel(p.root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return path
	}
	return "/" + rel
}
