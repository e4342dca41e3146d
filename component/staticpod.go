package component

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// Static-pod constants, as kubeadm writes them so tools written for kubeadm
// clusters find anvil's control-plane pods.
const (
	StaticPodNamespace = "kube-system"
	// nodeCriticalPriority is system-node-critical's value. The kubelet does
	// not run admission on static pods, so the value is set as well as the
	// class name, as kubeadm does.
	nodeCriticalPriority = int32(2000001000)
)

// StaticPod renders c as a static Pod for the kubelet.
func StaticPod(c Spec) (*corev1.Pod, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Image.Ref == "" || !path.IsAbs(c.Image.Binary) {
		return nil, fmt.Errorf("component %s: a static pod needs an image and the binary's path in it", c.Name)
	}
	ctr := corev1.Container{
		Name:  c.Name,
		Image: c.Image.Ref,
		// anvil's images are imported from the airgap bundle and never come
		// from a registry, so the kubelet must not try to pull them.
		ImagePullPolicy: corev1.PullNever,
		Command:         append(append([]string{c.Image.Binary}, c.Subcommand...), c.ArgStrings()...),
	}
	for _, e := range c.Env {
		ctr.Env = append(ctr.Env, corev1.EnvVar{Name: e.Name, Value: e.Value})
	}
	var err error
	if ctr.Resources, err = requests(c.Requests); err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	if live := c.Health.Live; live != nil {
		// The startup probe gives a slow first start (etcd replaying its
		// WAL, the apiserver filling its caches) four minutes before the
		// liveness probe may kill it.
		if ctr.StartupProbe, err = probe(live, 10, 10, 15, 24); err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		if ctr.LivenessProbe, err = probe(live, 10, 10, 15, 8); err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
	}
	if ready := c.Health.Ready; ready != nil {
		if ctr.ReadinessProbe, err = probe(ready, 0, 1, 15, 3); err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
	}
	volumes, mounts, err := hostMounts(c.Files)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	ctr.VolumeMounts = mounts
	if len(c.Capabilities) > 0 {
		caps := make([]corev1.Capability, len(c.Capabilities))
		for i, x := range c.Capabilities {
			caps[i] = corev1.Capability(x)
		}
		ctr.SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: caps}}
	}

	prio := nodeCriticalPriority
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      c.Name,
			Namespace: StaticPodNamespace,
			Labels:    map[string]string{"component": c.Name, "tier": "control-plane"},
		},
		Spec: corev1.PodSpec{
			// Control-plane components serve on the node's own addresses,
			// and must run before any pod network exists.
			HostNetwork:       true,
			PriorityClassName: "system-node-critical",
			Priority:          &prio,
			SecurityContext: &corev1.PodSecurityContext{
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{ctr},
			Volumes:    volumes,
		},
	}, nil
}

// StaticPodManifest renders c as the YAML manifest the kubelet reads.
func StaticPodManifest(c Spec) ([]byte, error) {
	pod, err := StaticPod(c)
	if err != nil {
		return nil, err
	}
	b, err := yaml.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("component %s: marshal pod: %w", c.Name, err)
	}
	return b, nil
}

func requests(r Requests) (corev1.ResourceRequirements, error) {
	var out corev1.ResourceRequirements
	for _, q := range []struct {
		name  corev1.ResourceName
		value string
	}{{corev1.ResourceCPU, r.CPU}, {corev1.ResourceMemory, r.Memory}} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			return out, fmt.Errorf("%s request %q: %w", q.name, q.value, err)
		}
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		out.Requests[q.name] = v
	}
	return out, nil
}

// probe turns a Probe into an HTTP GET probe. The kubelet does not verify
// certificates on HTTPS probes, so only the URL carries over; health
// endpoints are open to anonymous requests.
func probe(p *Probe, initialDelay, period, timeout, failures int32) (*corev1.Probe, error) {
	u, err := parseProbeURL(p.URL)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return nil, fmt.Errorf("probe url %q: %w", p.URL, err)
	}
	scheme := corev1.URISchemeHTTP
	if u.Scheme == "https" {
		scheme = corev1.URISchemeHTTPS
	}
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host:   u.Hostname(),
			Port:   intstr.FromInt32(int32(port)),
			Path:   u.RequestURI(),
			Scheme: scheme,
		}},
		InitialDelaySeconds: initialDelay,
		PeriodSeconds:       period,
		TimeoutSeconds:      timeout,
		FailureThreshold:    failures,
	}, nil
}

// hostMounts turns a component's files into hostPath volumes. A directory is
// mounted whole; a file is mounted on its own unless a directory listed
// alongside it already covers it. Only writable entries are mounted
// read-write.
func hostMounts(files []File) ([]corev1.Volume, []corev1.VolumeMount, error) {
	fs := slices.Clone(files)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })

	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	names := map[string]string{}
	for i, f := range fs {
		if i > 0 && fs[i-1].Path == f.Path {
			return nil, nil, fmt.Errorf("file %s listed twice", f.Path)
		}
		if coveredBy(fs, f) {
			continue
		}
		name := volumeName(f.Path)
		if other, dup := names[name]; dup {
			return nil, nil, fmt.Errorf("files %s and %s make the same volume name %s", other, f.Path, name)
		}
		names[name] = f.Path
		var t corev1.HostPathType
		switch {
		case f.Dir && f.Writable:
			t = corev1.HostPathDirectoryOrCreate
		case f.Dir:
			t = corev1.HostPathDirectory
		default:
			// File, not FileOrCreate: a missing certificate or config must
			// stop the pod with a clear event, not be replaced by an empty
			// file.
			t = corev1.HostPathFile
		}
		volumes = append(volumes, corev1.Volume{
			Name:         name,
			VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: f.Path, Type: &t}},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: f.Path, ReadOnly: !f.Writable})
	}
	return volumes, mounts, nil
}

// coveredBy reports whether a directory entry in fs other than f contains f
// and grants at least f's access.
func coveredBy(fs []File, f File) bool {
	for _, d := range fs {
		if d.Dir && d.Path != f.Path && strings.HasPrefix(f.Path, d.Path+"/") && (d.Writable || !f.Writable) {
			return true
		}
	}
	return false
}

// volumeName derives a DNS label from a path: /etc/kubernetes/pki becomes
// etc-kubernetes-pki.
func volumeName(p string) string {
	n := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, strings.Trim(p, "/"))
	if len(n) > 63 {
		n = n[len(n)-63:]
	}
	return strings.Trim(n, "-")
}
