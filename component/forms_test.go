package component_test

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"

	"anvil.dev/anvil/component"
)

// TestFormsHaveTheSameCommandLine proves the point of declaring a component
// once: the unit's ExecStart, the pod's command and the process's args carry
// exactly the same words after the binary.
func TestFormsHaveTheSameCommandLine(t *testing.T) {
	all := nodeComponents(t, "")
	for _, c := range all {
		t.Run(c.Name, func(t *testing.T) {
			want := append(slices.Clone(c.Subcommand), c.ArgStrings()...)
			if len(c.Args) == 0 {
				t.Fatal("component has no flags")
			}

			u, err := component.SystemdUnit(c, all)
			if err != nil {
				t.Fatal(err)
			}
			words := execStartWords(t, u)
			if words[0] != c.Binary {
				t.Errorf("unit runs %s, want %s", words[0], c.Binary)
			}
			if !slices.Equal(words[1:], want) {
				t.Errorf("unit arguments differ:\n got %q\nwant %q", words[1:], want)
			}

			pod := decodePodStrict(t, c)
			cmd := pod.Spec.Containers[0].Command
			if cmd[0] != c.Image.Binary {
				t.Errorf("pod runs %s, want %s", cmd[0], c.Image.Binary)
			}
			if !slices.Equal(cmd[1:], want) || len(pod.Spec.Containers[0].Args) != 0 {
				t.Errorf("pod arguments differ:\n got %q %q\nwant %q", cmd[1:], pod.Spec.Containers[0].Args, want)
			}

			p, err := component.ProcessSpec(c, component.ProcessOptions{LogDir: "/var/log/anvil"})
			if err != nil {
				t.Fatal(err)
			}
			if p.Path != c.Binary || !slices.Equal(p.Args, want) {
				t.Errorf("process differs:\n got %s %q\nwant %s %q", p.Path, p.Args, c.Binary, want)
			}
		})
	}
}

// TestStaticPodsDecodeStrictly decodes every manifest as the kubelet's
// strict decoder would: an unknown or misspelled field is an error.
func TestStaticPodsDecodeStrictly(t *testing.T) {
	for _, c := range nodeComponents(t, "") {
		t.Run(c.Name, func(t *testing.T) {
			pod := decodePodStrict(t, c)
			s := pod.Spec
			if !s.HostNetwork || s.PriorityClassName != "system-node-critical" {
				t.Errorf("hostNetwork %v, priorityClassName %q", s.HostNetwork, s.PriorityClassName)
			}
			ctr := s.Containers[0]
			if ctr.Image != c.Image.Ref {
				t.Errorf("image %q, want %q", ctr.Image, c.Image.Ref)
			}
			for _, p := range []*corev1.Probe{ctr.StartupProbe, ctr.LivenessProbe, ctr.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil {
					t.Fatalf("missing HTTP probe: %+v", p)
				}
			}
			if len(s.Volumes) == 0 || len(s.Volumes) != len(ctr.VolumeMounts) {
				t.Errorf("%d volumes, %d mounts", len(s.Volumes), len(ctr.VolumeMounts))
			}
			for _, m := range ctr.VolumeMounts {
				if !m.ReadOnly && !writable(c, m.MountPath) {
					t.Errorf("%s is mounted read-write but the component does not write it", m.MountPath)
				}
			}
		})
	}
}

func writable(c component.Spec, path string) bool {
	for _, f := range c.Files {
		if f.Path == path {
			return f.Writable
		}
	}
	return false
}

func decodePodStrict(t *testing.T, c component.Spec) *corev1.Pod {
	t.Helper()
	b, err := component.StaticPodManifest(c)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	s := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	obj, gvk, err := s.Decode(b, nil, nil)
	if err != nil {
		t.Fatalf("strict decode: %v\n%s", err, b)
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || gvk.Kind != "Pod" {
		t.Fatalf("decoded %v, want a Pod", gvk)
	}
	return pod
}
