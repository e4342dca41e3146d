// Package podnet is the pod network anvil runs on every node: host-gw, the
// simplest network a bare-metal cluster on one L2 segment can have. It owns
//
//   - the node's CNI config list (/etc/cni/net.d/10-anvil.conflist: the
//     bridge plugin on bridge anvil0 with host-local IPAM over the Node's own
//     pod range(s), and portmap), written once the controller-manager has
//     given the Node a pod CIDR;
//   - one route per other Node, "podCIDR via nodeIP" on the node's own
//     interface, tagged with RouteProtocol so that anvil removes only its
//     own routes;
//   - the masquerade of pod traffic leaving the cluster's pod CIDR, in one
//     nftables table of its own (inet anvil-podnet), replaced atomically;
//   - IP forwarding (net.ipv4.ip_forward, and IPv6 forwarding when the
//     cluster has an IPv6 pod CIDR).
//
// A Controller does all of it and keeps it so; Cleanup undoes it for
// `anvil reset`. The agent, once its Node is registered:
//
//	ctl, err := podnet.New(podnet.Config{NodeName: …, Interface: …,
//		ClusterPodCIDRs: …, Client: clientset, Root: root, Log: log})
//	go ctl.Run(ctx)      // once; returns when ctx ends
//	ctl.Status()         // routes programmed, Nodes waiting and why
//
// and `anvil reset`, after the kubelet and containerd have stopped:
//
//	podnet.Cleanup(ctx, podnet.CleanupOptions{Root: root})
//
// An apiserver outage changes nothing on the node: the informer keeps the
// last list of Nodes, and routes stay as they are until it answers again.
//
// Pod-to-pod traffic is never masqueraded, and neither is traffic to
// Service ClusterIPs as such: kube-proxy rewrites a ClusterIP to an
// endpoint before postrouting, so by the time the masquerade rule looks,
// the destination is a pod (left alone) or a host (masqueraded, as any
// other address outside the pod CIDR). So the service CIDR appears nowhere
// in the rules.
//
// The Controller's life cycle:
//
//	New (validates, touches nothing) ─► Run:
//	   start a Node informer (all Nodes, slimmed to pod CIDRs and
//	   InternalIPs), wait for its first list; subscribe to the kernel's
//	   route, link and address notifications
//	   loop, on a Node event, a kernel notification, a resync or a retry:
//	     forwarding + masquerade table (nft)      ─┐ each step's problem is in
//	     own Node's pod CIDR ─► CNI config file    │ Status and the log; any
//	     other Nodes ─► routes (add/replace/del)  ─┘ problem or waiting Node
//	                                                  retries with backoff
//	ctx done ─► Run returns; routes, table and file stay (pods keep their
//	            network while the agent restarts); Cleanup removes them.
package podnet
