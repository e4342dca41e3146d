package lab

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"

	"anvil.dev/anvil/api/v1alpha1"
)

// clusterFile renders the cluster file for a lab: its machines with their
// roles and addresses, reached as root with the lab's key and checked
// against the lab's known_hosts, the control plane as systemd units. With
// two masters or more the control plane is highly available out of the
// box: the lab's free VIP floats between them and is the endpoint, so
// losing any one master leaves the apiserver reachable. Backups are
// encrypted to backupRecipient, whose identity is the lab's backup.key.
func clusterFile(s *state, p paths, backupRecipient string) ([]byte, error) {
	c := v1alpha1.Cluster{
		APIVersion:   v1alpha1.APIVersion,
		Kind:         v1alpha1.KindCluster,
		Name:         s.Name,
		ControlPlane: v1alpha1.ControlPlane{Layout: v1alpha1.LayoutSystemd},
		SSH: v1alpha1.SSH{
			User:         "root",
			Port:         22,
			IdentityFile: p.key(),
			KnownHosts:   p.knownHosts(),
		},
		Backup: v1alpha1.Backup{Recipients: []string{backupRecipient}},
	}
	for _, m := range s.Machines {
		c.Hosts = append(c.Hosts, v1alpha1.Host{Name: m.Name, Address: m.Address, Role: m.Role})
	}
	if masters, _ := s.counts(); masters >= 2 {
		c.ControlPlane.VIP = s.vip()
		c.ControlPlane.Endpoint = c.ControlPlane.VIP.String()
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Lab %q, written by `anvil lab up`. Apply it with\n#   anvil cluster apply -f %s\n", s.Name, p.clusterFile())
	fmt.Fprintf(&b, "# Its backups are encrypted to the identity in %s.\n", p.backupKey())
	// v1alpha1 marshals unset addresses as "" (see ControlPlane.VIP); a
	// file for people reads better without them, and decodes the same.
	var doc yaml.Node
	if err := doc.Encode(&c); err != nil {
		return nil, fmt.Errorf("encode cluster file: %w", err)
	}
	dropEmptyStrings(&doc)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("encode cluster file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode cluster file: %w", err)
	}
	return b.Bytes(), nil
}

// dropEmptyStrings removes every mapping entry whose value is "".
func dropEmptyStrings(n *yaml.Node) {
	for _, c := range n.Content {
		dropEmptyStrings(c)
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	kept := n.Content[:0]
	for i := 0; i+1 < len(n.Content); i += 2 {
		if v := n.Content[i+1]; v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value == "" {
			continue
		}
		kept = append(kept, n.Content[i], n.Content[i+1])
	}
	n.Content = kept
}
