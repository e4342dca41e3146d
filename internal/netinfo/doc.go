// Package netinfo reads this machine's addresses through netlink, the way
// anvil picks an advertise address when the operator gives none: the
// primary address of the interface that holds the default route.
//
// It never changes an address or a route.
package netinfo
